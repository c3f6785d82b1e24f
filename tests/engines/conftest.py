"""Fixtures for the real agent CLIs: a private HOME and working directory per test, and
a runner that starts an `Invocation` with nothing inherited from this process."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.engines import Invocation


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


RunCli = Callable[[Invocation], Run]


@dataclass
class Sandbox:
    """Not a real sandbox: just the HOME and working directory a CLI may write to."""

    home: Path
    work: Path


@pytest.fixture
def place(tmp_path: Path) -> Sandbox:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    return Sandbox(home, work)


@pytest.fixture
def run_cli(place: Sandbox) -> RunCli:
    def run(invocation: Invocation) -> Run:
        invocation.prepare()
        done = subprocess.run(
            invocation.argv,
            cwd=place.work,
            env=invocation.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=100,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run

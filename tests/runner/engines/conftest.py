"""Fixtures for the real agent CLIs: a private HOME and working directory per test, and
a runner that starts an `Invocation` with nothing inherited from this process."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


async def run_cli_until(
    invocation: Invocation, cwd: Path, stop: asyncio.Event | None = None, timeout: float = 90
) -> Run:
    """Run a CLI without blocking the event loop (the gateway serves it from this loop);
    terminate it once `stop` is set, as the runner does when the gateway ends an attempt."""
    invocation.prepare()
    proc = await asyncio.create_subprocess_exec(
        *invocation.argv,
        cwd=cwd,
        env=invocation.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    talk = asyncio.ensure_future(proc.communicate())
    waits: set[asyncio.Future[Any]] = {talk}
    if stop is not None:
        waits.add(asyncio.ensure_future(stop.wait()))
    done, pending = await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
    for future in pending:
        if future is not talk:
            future.cancel()
    if talk not in done:
        proc.terminate()
    out, err = await talk
    return Run(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())

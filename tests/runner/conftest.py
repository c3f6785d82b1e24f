"""Fixtures for sandbox tests: a host area holding a worktree and things it must not see."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.limits import Limits, MiB
from runner.sandbox import Sandbox, SandboxPolicy

BWRAP = "/usr/bin/bwrap"


@dataclass(frozen=True)
class Area:
    """A stand-in for the runner's data directory."""

    root: Path
    worktree: Path
    other_worktree_file: Path
    key_file: Path


@pytest.fixture
def area() -> Iterator[Area]:
    # Not pytest's tmp_path: its base directory is 0700, which the sandbox uid cannot cross,
    # just as a real data directory must be searchable (o+x) by it.
    root = Path(tempfile.mkdtemp(prefix="baro-sandbox-test-"))
    root.chmod(0o711)
    worktree = root / "worktrees" / "acme" / "S1"
    worktree.mkdir(parents=True)
    (root / "worktrees").chmod(0o711)
    (root / "worktrees" / "acme").chmod(0o711)
    other = root / "worktrees" / "other" / "S1" / "secret.txt"
    other.parent.mkdir(parents=True)
    other.write_text("other-repository-secret\n")
    key = root / "app-private-key.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot-a-real-key\n")
    key.chmod(0o644)
    yield Area(root=root, worktree=worktree, other_worktree_file=other, key_file=key)
    shutil.rmtree(root, ignore_errors=True)


def make_policy(area: Area, **limits: int) -> SandboxPolicy:
    base = {"memory_bytes": 1024 * MiB, "processes": 64, "file_size_bytes": 64 * MiB}
    base.update(limits)
    return SandboxPolicy(
        limits=Limits(**base),
        hidden_paths=(area.root, area.key_file),
        bwrap_path=BWRAP,
    )


@pytest.fixture
def sandbox(area: Area) -> Sandbox:
    if not Path(BWRAP).exists():
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap")
    return Sandbox(make_policy(area))

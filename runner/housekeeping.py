"""Disk hygiene for a runner's data directory, which outlives its processes (a Fly volume).

Three things would otherwise grow without bound:

- worktrees of runner processes that died (SIGKILL, OOM, a deploy): each process keeps its
  worktrees under `worktrees/<owner>/` and holds an `flock` on `worktrees/<owner>.lock` for
  its whole life, so a lock anyone can take marks a dead owner whose checkouts can go;
- mirrors of repositories no story has used for a while (the mirror's lock file is touched
  on every fetch): removed under that lock, and fetched afresh if the repository comes back;
- half-made mirrors left by an `init` that was interrupted, and removals cut short.

A mirror's lock file is never deleted: a process waiting on it must not end up holding a lock
on a file that no longer guards anything. An owner's lock file goes with its directory: the
name is unique to one process, which is dead, so nobody else waits on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TMP_MIRROR_GRACE_SECONDS = 3600.0
"""A mirror being initialised is renamed into place within seconds; older leftovers are dead."""


@contextlib.contextmanager
def try_flock(path: Path) -> Iterator[bool]:
    """Hold an exclusive `flock` on `path` if nobody else does (yields False otherwise).

    flock conflicts between open file descriptions even inside one process, so this also
    sees the locks this very process holds through other descriptors.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class WorktreeOwner:
    """This process's claim on `worktrees/<owner>/`, held until `release` or process death."""

    def __init__(self, worktrees_dir: Path, owner: str) -> None:
        self.dir = worktrees_dir / owner
        self.lock_path = worktrees_dir / f"{owner}.lock"
        self._fd: int | None = None

    def acquire(self) -> Path:
        if self._fd is None:
            # Searchable (not readable) by others: a sandbox uid must reach its own worktree.
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            self.dir.parent.chmod(0o711)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RuntimeError(f"{self.lock_path} is held by another process") from None
            self._fd = fd
        self.dir.mkdir(exist_ok=True)
        self.dir.chmod(0o711)
        return self.dir

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Swept:
    """What one pass removed, for the log and the tests."""

    worktrees: list[Path] = field(default_factory=list)
    mirrors: list[Path] = field(default_factory=list)
    partial_mirrors: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.worktrees or self.mirrors or self.partial_mirrors)


def remove_orphaned_worktrees(worktrees_dir: Path) -> list[Path]:
    """Owner directories (or loose checkouts) no live process holds the lock of."""
    removed: list[Path] = []
    if not worktrees_dir.is_dir():
        return removed
    for entry in sorted(worktrees_dir.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        lock = worktrees_dir / f"{entry.name}.lock"
        with try_flock(lock) as free:
            # No lock file at all: a checkout from before owners had locks, or a lock lost
            # by hand. An owner creates its lock before its directory, so this is no race.
            if free or not lock.exists():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                if lock.exists():
                    lock.unlink(missing_ok=True)  # unique per process: nobody waits on it
    return removed


def prune_mirrors(mirrors_dir: Path, *, max_idle_seconds: float, now: float | None = None) -> Swept:
    """Remove mirrors idle longer than `max_idle_seconds`, and dead half-made ones. A mirror
    in use (locked) is left alone; a story fetches its mirror when it starts, so a mirror idle
    that long has no checkout that still needs it."""
    swept = Swept()
    current = time.time() if now is None else now
    if not mirrors_dir.is_dir():
        return swept
    for owner in sorted(p for p in mirrors_dir.iterdir() if p.is_dir()):
        for entry in sorted(owner.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                continue
            if entry.name.startswith(".") and ".trash-" in entry.name:
                shutil.rmtree(entry, ignore_errors=True)  # a removal that was cut short
                swept.partial_mirrors.append(entry)
                continue
            if entry.name.startswith(".") and ".tmp-" in entry.name:
                if current - entry.stat().st_mtime > TMP_MIRROR_GRACE_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
                    swept.partial_mirrors.append(entry)
                continue
            if entry.name.endswith(".git") and _remove_if_idle(entry, max_idle_seconds, current):
                swept.mirrors.append(entry)
    return swept


def _remove_if_idle(mirror: Path, max_idle_seconds: float, now: float) -> bool:
    lock = mirror.with_name(mirror.name + ".lock")
    with try_flock(lock) as free:
        if not free:
            return False  # in use right now (or never used through a lock: leave it)
        if now - lock.stat().st_mtime <= max_idle_seconds:
            return False
        trash = mirror.with_name(f".{mirror.name}.trash-{secrets.token_hex(4)}")
        os.rename(mirror, trash)  # gone for every reader at once; the delete can be slow
    shutil.rmtree(trash, ignore_errors=True)
    return True


def sweep(data_dir: Path, *, max_idle_seconds: float, now: float | None = None) -> Swept:
    """One housekeeping pass over a runner data directory (blocking: run it in a thread)."""
    worktrees = remove_orphaned_worktrees(data_dir / "worktrees")
    swept = prune_mirrors(data_dir / "mirrors", max_idle_seconds=max_idle_seconds, now=now)
    swept.worktrees = worktrees
    if swept:
        log.info(
            "housekeeping removed %d orphaned worktree dirs, %d idle mirrors, %d partial mirrors",
            len(swept.worktrees),
            len(swept.mirrors),
            len(swept.partial_mirrors),
        )
    return swept


__all__ = [
    "Swept",
    "WorktreeOwner",
    "prune_mirrors",
    "remove_orphaned_worktrees",
    "sweep",
    "try_flock",
]

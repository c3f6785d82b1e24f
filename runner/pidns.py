"""A command's PID namespace: learn it from bubblewrap, kill it, wait until it is empty.

The invariant the rest of the runner builds on: **no process of a command's sandbox is alive
outside `Sandbox.run`.** When `run` returns, every process the command started is gone;
when that cannot be established, `run` raises `SandboxProcessesAlive` and the worktree is
left alone (not taken back, not touched), since a live sandbox process could race whatever
the runner does there (ownership walks, git, cleanup).

Killing the outer bwrap is not enough: the kernel tears a PID namespace down after its pid
1 dies, which takes seconds after a fork bomb. So the runner reads the namespace's pid 1
and inode from bwrap's `--info-fd`, kills pid 1 through a pidfd (no pid reuse race; the
kernel then kills every process in the namespace), and waits until pid 1 has exited (its
pidfd turns readable only once the kernel has reaped the whole namespace) and no process
in /proc is in that namespace any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
SETTLE_TIMEOUT_SECONDS = 30.0


class SandboxProcessesAlive(RuntimeError):
    """A finished command's sandbox still has live processes: do not touch its worktree."""


_abandoned: set[Path] = set()
"""Worktrees (resolved) whose sandbox would not die, in this process."""


def abandon(worktree: Path) -> None:
    """Mark a worktree whose command left live processes: nothing may touch it any more."""
    _abandoned.add(worktree.resolve())


def require_quiet(worktree: Path) -> None:
    """Raise SandboxProcessesAlive if a command on `worktree` (or a worktree inside it) left
    processes that would not die. Call before touching a worktree outside `Sandbox.run`;
    otherwise the invariant holds: no sandbox process is alive there."""
    path = worktree.resolve()
    for dead in _abandoned:
        if dead == path or dead.is_relative_to(path):
            raise SandboxProcessesAlive(
                f"{dead}: an earlier command's processes would not die; the worktree is "
                "left alone (restart the runner)"
            )


@dataclass(frozen=True)
class BwrapInfo:
    """What bwrap's `--info-fd` says: pid 1 of the sandbox (as the runner sees it)."""

    child_pid: int
    pid_namespace: int


def parse_info(raw: bytes) -> BwrapInfo | None:
    """The info JSON, or None when bwrap wrote nothing (it failed before creating pid 1)."""
    if not raw.strip():
        return None
    data = json.loads(raw)
    return BwrapInfo(child_pid=int(data["child-pid"]), pid_namespace=int(data["pid-namespace"]))


def namespace_of(pid: int) -> int | None:
    """The inode of `pid`'s PID namespace; None if it is gone, a zombie or not ours to see."""
    try:
        return os.stat(PROC / str(pid) / "ns" / "pid").st_ino
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Not a zombie (a dead process waiting for its parent, whose ns link still resolves)."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


def members(inode: int) -> list[int]:
    """Live processes in the namespace `inode`, found by scanning /proc.

    Processes the runner may not inspect are not the sandbox's: a sandbox process runs as the
    runner's own uid (unprivileged runner) or as the command's uid (root runner, who sees all).
    """
    found = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            pid = int(entry.name)
            if namespace_of(pid) == inode and _alive(pid):
                found.append(pid)
    return found


class PidNamespace:
    """One command's namespace, held through a pidfd on its pid 1."""

    def __init__(self, info: BwrapInfo, parent_pid: int | None) -> None:
        """Attach to pid 1 right after bwrap reported it; `parent_pid` is the outer bwrap."""
        self.inode = info.pid_namespace
        self.pid1 = info.child_pid
        self._pidfd: int | None = None
        try:
            pidfd = os.pidfd_open(info.child_pid)
        except ProcessLookupError:
            return  # pid 1 is already reaped: the kernel has emptied the namespace
        pid = info.child_pid
        mine = (parent_pid is not None and _parent_of(pid) == parent_pid) or (
            namespace_of(pid) == self.inode
        )
        if mine and not _exited(pidfd):
            # Alive after the checks, so they looked at this very process, not a reused pid.
            self._pidfd = pidfd
            return
        os.close(pidfd)  # exited (so the namespace is empty) or the pid is someone else's

    def kill(self) -> None:
        """SIGKILL pid 1; the kernel then kills every other process of the namespace."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def kill_members(self) -> None:
        """SIGKILL every process found in the namespace (when pid 1 could not be held)."""
        for pid in members(self.inode):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                if namespace_of(pid) == self.inode:  # checked after the pidfd: no reuse race
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            finally:
                os.close(pidfd)

    def empty(self) -> bool:
        if self._pidfd is not None and not _exited(self._pidfd):
            return False
        return not members(self.inode)

    async def wait_empty(self, timeout: float = SETTLE_TIMEOUT_SECONDS) -> None:
        """Kill and wait until no process of the namespace is alive; raise if that takes
        longer than `timeout` (a process stuck in the kernel)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = 0.005
        while True:
            self.kill()
            if self._pidfd is None:
                await asyncio.to_thread(self.kill_members)
            if await asyncio.to_thread(self.empty):
                return
            if loop.time() > deadline:
                left = await asyncio.to_thread(members, self.inode)
                raise SandboxProcessesAlive(
                    f"{len(left)} process(es) of a finished sandbox (pid namespace "
                    f"{self.inode}, pids {left[:10]}) are still alive after {timeout:g} s; "
                    "its worktree is left as it is"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def _parent_of(pid: int) -> int | None:
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return None


def _exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited (for a namespace's pid 1: after the
    kernel has killed and reaped all the others)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))

"""Run one prepared command line: limits, merged capped output, wall-clock timeout, kill.

Shared by the bubblewrap sandbox and the unsandboxed fallback so that both enforce the same
limits and report the same way. The sandbox adds a `Supervisor`: watches that end the
command when it breaks a limit the kernel does not enforce per command, and a kill that
reaches the processes outside the launcher's process group (its PID namespace, its cgroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from runner.capture import CappedOutput, CaptureProtocol
from runner.limits import Limits, apply_limits

# How long output may keep flowing after the command exited (a leftover background process
# of an unsandboxed command) before its process group is killed.
DRAIN_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class CommandResult:
    """What a command did. `exit_code` is None only when the timeout killed it.

    A death by signal N is reported as `killed_by_signal=N` with the shell's exit code
    128+N; a plain `exit 137` reads the same (best effort, as in any shell). A command that
    broke one of the sandbox's limits (total memory, worktree growth) has `limit_exceeded`
    set, says so at the end of its output, and never reads as a success.
    """

    exit_code: int | None
    output: str
    truncated_bytes: int
    timed_out: bool
    duration: float
    killed_by_signal: int | None
    limit_exceeded: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit_exceeded is None


@dataclass(frozen=True)
class Spawn:
    """A fully prepared command: nothing of the runner's own environment leaks in."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    limits: Limits
    uid: int | None = None
    gid: int | None = None
    pass_fds: tuple[int, ...] = ()
    cgroup_procs: tuple[str, ...] = ()
    """`cgroup.procs` files the child joins before it starts (the command's cgroups)."""


class Supervisor(Protocol):
    """The sandbox's part in one running command."""

    def started(self, pid: int) -> None:
        """The launcher is running as `pid` (called at once, before anything can cancel)."""

    async def watch(self) -> None:
        """Return when the command broke a limit and must be killed; runs until cancelled."""

    def kill(self) -> None:
        """Kill everything the command started, also outside its process group."""


def join_cgroups(procs_files: Sequence[str]) -> None:
    """Move the calling process into each cgroup (its children inherit them)."""
    pid = str(os.getpid()).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


def _prepare_child(spawn: Spawn) -> None:
    """Between fork and exec: join the command's cgroups (while still the runner's user, who
    may write them), take the sandbox identity, then the limits.

    Done here rather than with Popen's `user=`/`group=` because uvloop does not take those.
    """
    join_cgroups(spawn.cgroup_procs)
    if spawn.gid is not None:
        os.setgroups([])
        os.setgid(spawn.gid)
    if spawn.uid is not None:
        os.setuid(spawn.uid)
    apply_limits(spawn.limits)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _status(returncode: int, timed_out: bool) -> tuple[int | None, int | None]:
    """(exit_code, killed_by_signal) from a raw return code."""
    if timed_out:
        return None, int(signal.SIGKILL)
    if returncode < 0:
        return 128 - returncode, -returncode
    if 128 < returncode < 128 + signal.NSIG:
        return returncode, returncode - 128
    return returncode, None


async def run_process(
    spawn: Spawn,
    *,
    timeout: float,
    head_bytes: int,
    tail_bytes: int,
    supervisor: Supervisor | None = None,
) -> CommandResult:
    """Start `spawn` in its own session, wait at most `timeout` seconds, kill its group after.

    With a `supervisor`, its watch can end the command early, and its kill runs as soon as
    the command is over (leftover background processes die at once, so output ends).
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    loop = asyncio.get_running_loop()
    sink = CappedOutput(head_bytes, tail_bytes)
    read_fd, write_fd = os.pipe()
    try:
        started = loop.time()
        proc = await asyncio.create_subprocess_exec(
            *spawn.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env=dict(spawn.env),
            cwd=spawn.cwd,
            start_new_session=True,
            preexec_fn=partial(_prepare_child, spawn),
            pass_fds=spawn.pass_fds,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    if supervisor is not None:
        supervisor.started(proc.pid)
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    transport: asyncio.ReadTransport | None = None
    timed_out = False

    def kill() -> None:
        _kill_group(proc.pid)
        if supervisor is not None:
            supervisor.kill()

    waiting = asyncio.ensure_future(proc.wait())
    watching = asyncio.ensure_future(supervisor.watch()) if supervisor is not None else None
    # From here on the command is running: whatever happens (a cancel included), the
    # finally below kills and reaps it.
    try:
        transport, capture = await loop.connect_read_pipe(lambda: CaptureProtocol(sink), pipe)
        pending = {waiting} if watching is None else {waiting, watching}
        done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            timed_out = watching not in done
            kill()
            await proc.wait()
        elif supervisor is not None:
            supervisor.kill()
        if watching is not None and watching.done():
            watching.result()  # a broken watch is a runner bug: raise it (after the kill)
        duration = loop.time() - started
        try:
            await asyncio.wait_for(asyncio.shield(capture.done), DRAIN_GRACE_SECONDS)
        except TimeoutError:
            kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(capture.done), DRAIN_GRACE_SECONDS)
    finally:
        if watching is not None and not watching.done():
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        if proc.returncode is None:
            kill()
            await proc.wait()
        waiting.cancel()
        if transport is not None:
            transport.close()
        else:
            pipe.close()
    assert proc.returncode is not None
    exit_code, killed_by = _status(proc.returncode, timed_out)
    return CommandResult(
        exit_code=exit_code,
        output=sink.text(),
        truncated_bytes=sink.dropped,
        timed_out=timed_out,
        duration=duration,
        killed_by_signal=killed_by,
    )

"""Run one prepared command line: limits, merged capped output, wall-clock timeout, kill.

Shared by the bubblewrap sandbox and the unsandboxed fallback so that both enforce the same
limits and report the same way.
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

from runner.capture import CappedOutput, CaptureProtocol
from runner.limits import Limits, apply_limits

# How long output may keep flowing after the command exited (a leftover background process
# of an unsandboxed command) before its process group is killed.
DRAIN_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class CommandResult:
    """What a command did. `exit_code` is None only when the timeout killed it.

    A death by signal N is reported as `killed_by_signal=N` with the shell's exit code
    128+N; a plain `exit 137` reads the same (best effort, as in any shell).
    """

    exit_code: int | None
    output: str
    truncated_bytes: int
    timed_out: bool
    duration: float
    killed_by_signal: int | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


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


def _prepare_child(spawn: Spawn) -> None:
    """Between fork and exec: take the sandbox identity, then the limits.

    Done here rather than with Popen's `user=`/`group=` because uvloop does not take those.
    """
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
    spawn: Spawn, *, timeout: float, head_bytes: int, tail_bytes: int
) -> CommandResult:
    """Start `spawn` in its own session, wait at most `timeout` seconds, kill its group after."""
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
    transport, capture = await loop.connect_read_pipe(
        lambda: CaptureProtocol(sink), os.fdopen(read_fd, "rb", buffering=0)
    )
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        duration = loop.time() - started
        try:
            await asyncio.wait_for(asyncio.shield(capture.done), DRAIN_GRACE_SECONDS)
        except TimeoutError:
            _kill_group(proc.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(capture.done), DRAIN_GRACE_SECONDS)
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            await proc.wait()
        transport.close()
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

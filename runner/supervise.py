"""One sandboxed command's supervision: its PID namespace, cgroup and limit watches.

While the command runs, the watches end it when it breaks a limit no kernel mechanism
enforces per command here (total memory without a cgroup, worktree growth) or that the
kernel enforced on part of it (an OOM kill in its cgroup ends all of it). `settle` then
makes sure nothing of it is alive, whatever happened: that is the moment `Sandbox.run`
relies on before it takes the worktree back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from runner.cgroups import CommandCgroup
from runner.diskcap import GrowthWatch, growth_message, mib
from runner.memwatch import watch_total_memory
from runner.pidns import SETTLE_TIMEOUT_SECONDS, PidNamespace, SandboxProcessesAlive, parse_info
from runner.process import CommandResult

T = TypeVar("T")

CGROUP_POLL_SECONDS = 0.1


def memory_message(cap: int) -> str:
    return (
        f"the command was killed for using more than {mib(cap)} of memory in total (all its "
        "processes together); use less at once, e.g. fewer parallel jobs or workers"
    )


def with_limit(result: CommandResult, message: str) -> CommandResult:
    """The result of a command that broke a limit: the message ends its output, and it is
    a failure even if its exit code said otherwise."""
    exit_code = 1 if result.exit_code == 0 else result.exit_code
    gap = "\n" if result.output and not result.output.endswith("\n") else ""
    return dataclasses.replace(
        result,
        output=f"{result.output}{gap}[baro: {message}]\n",
        exit_code=exit_code,
        limit_exceeded=message,
    )


class CommandSupervisor:
    """Owns the read end of bwrap's info pipe (and, until the command starts, its write end)."""

    def __init__(
        self,
        *,
        info_fds: tuple[int, int],
        cgroup: CommandCgroup | None,
        memory_cap: int,
        watchdog_interval: float | None,
        growth: GrowthWatch | None,
        settle_timeout: float = SETTLE_TIMEOUT_SECONDS,
    ) -> None:
        self._info_read, self._info_write = info_fds
        self.cgroup = cgroup
        self.memory_cap = memory_cap
        self.watchdog_interval = watchdog_interval
        self.growth = growth
        self.settle_timeout = settle_timeout
        self.exceeded: str | None = None
        self.namespace: PidNamespace | None = None
        self._outer_pid: int | None = None
        self._info: asyncio.Future[None] | None = None

    @property
    def info_write_fd(self) -> int:
        assert self._info_write >= 0
        return self._info_write

    def _close_write(self) -> None:
        if self._info_write >= 0:
            os.close(self._info_write)
            self._info_write = -1

    async def _attach(self) -> None:
        """Read bwrap's info (EOF comes once bwrap wrote it or died) and hold pid 1."""
        try:
            raw = await asyncio.to_thread(_read_all, self._info_read)
        finally:
            os.close(self._info_read)
        info = parse_info(raw)
        if info is not None:
            self.namespace = PidNamespace(info, self._outer_pid)

    def _start_attach(self) -> asyncio.Future[None]:
        if self._info is None:
            self._close_write()
            self._info = asyncio.ensure_future(self._attach())
        return self._info

    def _attached(self) -> asyncio.Future[None]:
        """The attachment, shared by the watches and `settle`: shielded, so that cancelling
        a watch does not cancel it."""
        return asyncio.shield(self._start_attach())

    async def _inode(self) -> int | None:
        await self._attached()
        return self.namespace.inode if self.namespace is not None else None

    def started(self, pid: int) -> None:
        """Learn the outer bwrap and start reading its info right away: even a command
        cancelled at once must be found and killed by `settle`."""
        self._outer_pid = pid
        self._start_attach()

    async def watch(self) -> None:
        await self._attached()
        watches: list[Coroutine[Any, Any, str]] = []
        if self.cgroup is not None:
            watches.append(self._watch_oom(self.cgroup))
        elif self.watchdog_interval is not None:
            watches.append(self._watch_pss(self.watchdog_interval))
        if self.growth is not None:
            watches.append(self._watch_growth(self.growth))
        if not watches:
            await asyncio.Future()
        tasks = [asyncio.ensure_future(w) for w in watches]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.exceeded = next(iter(done)).result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch_oom(self, cgroup: CommandCgroup) -> str:
        while True:
            if cgroup.oom_kills() > 0:  # a cgroupfs read: in memory, never blocks
                return memory_message(self.memory_cap)
            await asyncio.sleep(CGROUP_POLL_SECONDS)

    async def _watch_pss(self, interval: float) -> str:
        await watch_total_memory(self._inode, self.memory_cap, interval)
        return memory_message(self.memory_cap)

    async def _watch_growth(self, growth: GrowthWatch) -> str:
        grown = await growth.watch()
        return growth_message(grown, growth.cap, killed=True)

    def kill(self) -> None:
        if self.namespace is not None:
            self.namespace.kill()
        if self.cgroup is not None:
            self.cgroup.kill()

    async def settle(self) -> None:
        """Kill whatever is left and wait until none of it is alive (bounded); remove the
        cgroup. Raises SandboxProcessesAlive when the processes will not die.

        Finishes even when the calling task is cancelled meanwhile (then re-raises that): the
        caller must never go on to the worktree with the sandbox half dead.
        """
        await _uncancelled(self._settle())

    async def _settle(self) -> None:
        # bwrap exited, so its info is there (or never will be: then the cgroup decides).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attached(), self.settle_timeout)
        self.kill()
        try:
            if self.namespace is not None:
                await self.namespace.wait_empty(self.settle_timeout)
            if self.cgroup is not None:
                await self._cgroup_empty(self.cgroup)
                if self.exceeded is None and self.cgroup.oom_kills() > 0:
                    self.exceeded = memory_message(self.memory_cap)
        finally:
            if self.namespace is not None:
                self.namespace.close()
        if self.cgroup is not None:
            self.cgroup.remove()

    async def _cgroup_empty(self, cgroup: CommandCgroup) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_timeout
        while cgroup.populated():
            if loop.time() > deadline:
                raise SandboxProcessesAlive(
                    f"the cgroup {cgroup.memory} of a finished sandbox still holds processes "
                    f"after {self.settle_timeout:g} s; its worktree is left as it is"
                )
            cgroup.kill()
            await asyncio.sleep(0.01)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def _uncancelled(work: Awaitable[T]) -> T:
    """Await `work` to its end even if this task is cancelled meanwhile; then re-raise."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result

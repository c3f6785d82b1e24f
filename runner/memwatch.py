"""The total memory cap where no cgroup can be made: a watchdog over the PID namespace.

An unprivileged runner without a delegated cgroup cannot ask the kernel to bound a group of
processes. Instead, every `interval` seconds this sums the proportional set size (Pss, from
`/proc/<pid>/smaps_rollup`: shared pages divided among the processes sharing them) of every
process in the command's PID namespace and reports when the sum passes the cap; the sandbox
then kills the whole namespace.

What it does not bound as tightly as a cgroup: memory allocated between two samples (each
process stays under RLIMIT_AS, and a sample is at most `interval` old), kernel memory, and
the sandbox's tmpfs (/tmp, HOME, /dev/shm), which are not part of any process's Pss unless
mapped: they add at most their sizes (`SandboxPolicy.tmp_size_bytes` twice plus
`shm_size_bytes`) on top of the cap. Shared memory no process maps any more (a memfd filled
with write(2), a detached SysV segment in the sandbox's IPC namespace) is not seen at all
until the command ends and its namespaces go; only a cgroup charges those. Hence a cgroup
wherever one can be had, and this as the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from runner.pidns import PROC, members

DEFAULT_INTERVAL_SECONDS = 0.2


def pss_bytes(pid: int) -> int:
    """A process's Pss; 0 when it is gone or cannot be read."""
    try:
        with open(PROC / str(pid) / "smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def namespace_pss(inode: int) -> int:
    """The Pss of every process in the PID namespace `inode`, summed."""
    return sum(pss_bytes(pid) for pid in members(inode))


async def watch_total_memory(
    namespace: Callable[[], Awaitable[int | None]],
    cap_bytes: int,
    interval: float = DEFAULT_INTERVAL_SECONDS,
) -> int:
    """Return the total (bytes) once the namespace's processes together use more than
    `cap_bytes`; never returns while they stay under it. `namespace` yields its inode (None:
    the sandbox never started, nothing to watch)."""
    inode = await namespace()
    if inode is None:
        await asyncio.Future()  # nothing will ever run: wait to be cancelled
    assert inode is not None
    while True:
        total = await asyncio.to_thread(namespace_pss, inode)
        if total > cap_bytes:
            return total
        await asyncio.sleep(interval)

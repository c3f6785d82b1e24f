"""Kernel resource limits for sandboxed commands.

The limits are set with `setrlimit` in the child between fork and exec, so they bind the
sandbox launcher and everything it starts; soft and hard limits are equal (CPU excepted) so a
command cannot raise them again.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB

# SIGXCPU at the soft limit, SIGKILL this many seconds later at the hard limit.
CPU_GRACE_SECONDS = 5


@dataclass(frozen=True)
class Limits:
    """Per-process ceilings; the wall-clock timeout is per call, not here.

    `memory_bytes` caps address space (RLIMIT_AS), which over-counts for runtimes that reserve
    large virtual ranges (JVM, Go, V8), hence the generous default; what all of a command's
    processes use together is capped apart (`SandboxPolicy.memory_total_bytes`). `processes`
    is only enforced by the kernel for a non-root uid, which is why the sandbox drops to one
    (a command's pids cgroup, where there is one, bounds it too).
    """

    cpu_seconds: int = 600
    memory_bytes: int = 8 * GiB
    processes: int = 256
    file_size_bytes: int = 1 * GiB
    open_files: int = 4096

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "processes", "file_size_bytes", "open_files"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive")

    def rlimits(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) triples, in the order they are applied."""
        return [
            (resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + CPU_GRACE_SECONDS),
            (resource.RLIMIT_AS, self.memory_bytes, self.memory_bytes),
            (resource.RLIMIT_NPROC, self.processes, self.processes),
            (resource.RLIMIT_FSIZE, self.file_size_bytes, self.file_size_bytes),
            (resource.RLIMIT_NOFILE, self.open_files, self.open_files),
            (resource.RLIMIT_CORE, 0, 0),
        ]


def apply_limits(limits: Limits) -> None:
    """Lower this process's limits; meant for `preexec_fn` (runs in the forked child)."""
    for which, soft, hard in limits.rlimits():
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            # An unprivileged process may only lower its hard limit.
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))

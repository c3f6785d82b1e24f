"""How much one command may add to its worktree (RLIMIT_FSIZE bounds single files only).

Usage is the disk space the worktree's entries occupy (st_blocks, the worktree's file system
only, hard links once). The baseline is taken before the command and the result after it;
for a root runner both come free with the ownership walks that lend the worktree and take
it back (`runner/ownership.py`), an unprivileged runner walks once more before the command.

During the command a cheap `statvfs` poll of the worktree's file system watches free space;
only when it dropped by more than the room left under the cap since the last walk (or sits
under a reserve floor) does a confirming walk run, and the command is killed if the worktree
really grew over the cap. Free space is shared with other commands, so a drop alone proves
nothing; conversely growth can only hide from the poll behind space freed at the same time
elsewhere on that file system, and the walk after the command is exact either way.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

POLL_SECONDS = 0.25
REWALK_SECONDS = 2.0
"""Under the reserve floor, confirming walks run at most this often."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Usage:
    """Bytes on disk of the entries added, each hard-linked inode once."""

    device: int
    bytes: int = 0
    entries: int = 0
    _linked: set[int] = field(default_factory=set)

    def add(self, st: os.stat_result) -> None:
        if st.st_dev != self.device:
            return
        self.entries += 1
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if st.st_ino in self._linked:
                return
            self._linked.add(st.st_ino)
        self.bytes += st.st_blocks * 512


def disk_usage(root: Path) -> Usage:
    """Walk `root` by directory fds, never following links or leaving its file system.

    Safe while a sandbox is still changing the tree: vanished entries are skipped, and a
    directory swapped for a link is not entered.
    """
    top = os.lstat(root)
    usage = Usage(top.st_dev)
    usage.add(top)
    stack = [os.open(root, _DIR_FLAGS)]
    while stack:
        fd = stack.pop()
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    usage.add(st)
                    if stat.S_ISDIR(st.st_mode) and st.st_dev == usage.device:
                        try:
                            stack.append(os.open(entry.name, _DIR_FLAGS, dir_fd=fd))
                        except OSError:
                            continue
        except OSError:
            pass
        finally:
            os.close(fd)
    return usage


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def growth_message(grown: int, cap: int, *, killed: bool) -> str:
    """What the agent reads: how much was written, the cap, and what to do."""
    what = (
        f"the command was killed: it wrote {mib(grown)} to the worktree"
        if killed
        else f"the command added {mib(grown)} to the worktree"
    )
    return (
        f"{what}, more than the {mib(cap)} one command may add. Delete what is not needed "
        "(build output, caches, downloads) before going on"
    )


class GrowthWatch:
    """Watches one running command's worktree against the cap."""

    def __init__(self, worktree: Path, baseline: int, cap: int, reserve: int) -> None:
        self.worktree = worktree
        self.baseline = baseline
        self.cap = cap
        self.reserve = reserve
        self.grown = 0
        free = free_bytes(worktree)
        self._start_free = free
        self._trigger = free - cap

    def dropped_past_cap(self) -> bool:
        """Whether free space fell by more than the cap since the command started."""
        free = free_bytes(self.worktree)
        return self._start_free - free > self.cap or free < self.reserve

    async def watch(self) -> int:
        """Return the growth (bytes) once a walk confirms it is over the cap."""
        loop = asyncio.get_running_loop()
        last_walk = -REWALK_SECONDS
        while True:
            await asyncio.sleep(POLL_SECONDS)
            free = free_bytes(self.worktree)
            low = free < self.reserve and loop.time() - last_walk >= REWALK_SECONDS
            if free >= self._trigger and not low:
                continue
            used = await asyncio.to_thread(disk_usage, self.worktree)
            last_walk = loop.time()
            self.grown = used.bytes - self.baseline
            if self.grown > self.cap:
                return self.grown
            # Only a further drop of the room left under the cap could cross it.
            self._trigger = free_bytes(self.worktree) - (self.cap - max(self.grown, 0))

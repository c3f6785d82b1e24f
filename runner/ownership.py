"""Lend a worktree to the sandbox user for one command, then take it back.

The kernel only enforces the process limit for a non-root uid, so a root runner drops each
sandbox to an unprivileged uid, and that uid needs to own the worktree to edit it. Outside a
command the worktree belongs to the runner again, so git and cleanup never meet foreign
ownership. Both walks use lchown and never follow symlinks, and they run only while no
sandbox process is alive (`Sandbox.run` waits until its PID namespace is empty before taking
the worktree back), so the sandbox cannot redirect them. Since they visit every entry anyway,
they also sum its disk usage: the baseline and result of the worktree growth cap
(`runner/diskcap.py`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.diskcap import Usage

_SET_ID_BITS = stat.S_ISUID | stat.S_ISGID


def _entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every path under `root` (itself included) on the same filesystem, without following links."""
    top = os.lstat(root)
    yield str(root), top
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                yield entry.path, st
                if stat.S_ISDIR(st.st_mode) and st.st_dev == top.st_dev:
                    stack.append(entry.path)


def owner(root: Path) -> tuple[int, int]:
    st = os.lstat(root)
    return st.st_uid, st.st_gid


@dataclass(frozen=True)
class Lent:
    """One ownership walk: entries changed, and the tree's disk usage (bytes)."""

    changed: int
    used_bytes: int


def lend_tree(root: Path, uid: int, gid: int) -> Lent:
    """Give every entry to uid:gid and strip set-id bits from files; sum the usage.

    Set-id bits are stripped because a file written by sandboxed code must never become a
    setuid binary of the runner's user.
    """
    changed = 0
    usage: Usage | None = None
    for path, st in _entries(root):
        if usage is None:
            usage = Usage(st.st_dev)
        usage.add(st)
        if st.st_uid != uid or st.st_gid != gid:
            os.chown(path, uid, gid, follow_symlinks=False)
            changed += 1
        if stat.S_ISREG(st.st_mode) and st.st_mode & _SET_ID_BITS:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~_SET_ID_BITS)
    return Lent(changed, usage.bytes if usage else 0)


def chown_tree(root: Path, uid: int, gid: int) -> int:
    """`lend_tree`, returning the number of entries changed."""
    return lend_tree(root, uid, gid).changed

"""Make a worktree hold exactly one tree: the runner's own checkout, reset and clean.

Used for a fresh worktree, for reusing a kept one (only files that differ are rewritten),
and for handing a conflicted merge to the agent. Everything is done relative to directory
descriptors opened with `O_NOFOLLOW`, so a symlink the agent left (even in place of a
directory or of the old `.git` file) is removed, never followed; whatever is not in the tree
(untracked and ignored files, nested repositories, FIFOs) goes. Blobs come from the mirror
through `git cat-file --batch`; host git never sees the worktree.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from runner.change import EXECUTABLE_MODE, GITLINK_MODE, SYMLINK_MODE, Entry, TreeEntry
from runner.objects import Tree
from runner.scan import HashCache, Listing, open_dir_beneath, scan

BATCH_BYTES = 8 * 1024 * 1024
BATCH_FILES = 512
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

ReadBlobs = Callable[[Sequence[str]], AsyncIterator[bytes]]
"""The contents of these blobs, in order (`runner.objects.stream_blobs` on the mirror)."""


async def materialise(root: Path, tree: Tree, read_blobs: ReadBlobs, hashes: HashCache) -> int:
    """Reset `root` to `tree`; returns how many entries were written."""
    listing = Listing(
        ignore=None,
        want_hash=lambda path, st: tree.sizes.get(path) == st.st_size,
        max_file_bytes=1 << 62,
    )
    current = await asyncio.to_thread(scan, root, listing, hashes)
    remove, keep = _plan(tree, current.entries)
    remove += current.repo_markers + current.unreadable
    await asyncio.to_thread(_remove_all, root, remove)
    wanted = [(p, tree.entries[p]) for p in sorted(tree.entries) if p not in keep]
    gitlinks = [(p, e, b"") for p, e in wanted if e.mode == GITLINK_MODE]
    blobs = [(p, e) for p, e in wanted if e.mode != GITLINK_MODE]
    written = await asyncio.to_thread(_write_all, root, gitlinks, hashes) if gitlinks else 0
    batch: list[tuple[str, TreeEntry, bytes]] = []
    size = 0
    index = 0
    async for data in read_blobs([e.sha for _, e in blobs]):
        path, entry = blobs[index]
        index += 1
        batch.append((path, entry, data))
        size += len(data)
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            written += await asyncio.to_thread(_write_all, root, batch, hashes)
            batch, size = [], 0
    if batch:
        written += await asyncio.to_thread(_write_all, root, batch, hashes)
    return written


def _plan(tree: Tree, entries: dict[str, Entry]) -> tuple[list[str], set[str]]:
    """(top-most paths to remove, tree paths already right)."""
    holders = set()
    for path in tree.entries:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            holders.add("/".join(parts[:i]))
    remove: list[str] = []
    keep: set[str] = set()
    removed: set[str] = set()
    for path in sorted(entries):
        if _has_ancestor_in(path, removed):
            continue
        entry = entries[path]
        wanted = tree.entries.get(path)
        if wanted is not None and _matches(entry, wanted):
            keep.add(path)
            continue
        if wanted is None and path in holders and entry.kind == "dir":
            continue
        remove.append(path)
        removed.add(path)
    return remove, keep


def _has_ancestor_in(path: str, dirs: set[str]) -> bool:
    while "/" in path:
        path = path.rpartition("/")[0]
        if path in dirs:
            return True
    return False


def _matches(entry: Entry, wanted: TreeEntry) -> bool:
    if wanted.mode == GITLINK_MODE:
        return entry.kind == "dir"
    if wanted.mode == SYMLINK_MODE:
        return entry.kind == "symlink" and entry.sha == wanted.sha
    if entry.kind != "file" or entry.sha != wanted.sha:
        return False
    return bool(entry.mode & 0o100) == (wanted.mode == EXECUTABLE_MODE)


def _remove_all(root: Path, paths: list[str]) -> None:
    top = os.open(root, _DIR_FLAGS)
    try:
        for path in sorted(paths, key=lambda p: p.count("/"), reverse=True):
            parent, _, name = path.rpartition("/")
            try:
                fd = open_dir_beneath(top, parent)
            except OSError:
                continue  # its parent went already
            try:
                remove_at(fd, name)
            finally:
                os.close(fd)
    finally:
        os.close(top)


def remove_at(dir_fd: int, name: str) -> None:
    """Remove `name` in directory `dir_fd` whatever it is, never following a link."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    _unlock_dirs(dir_fd, name)
    try:
        shutil.rmtree(name, dir_fd=dir_fd)
    except RecursionError:  # deeper than Python's stack: leave it to rm(1)
        _rm_rf(dir_fd, name)


def _unlock_dirs(dir_fd: int, name: str) -> None:
    """Give directories the owner's rwx back (a runner that is not root cannot otherwise
    empty a directory a command made read-only); touches directories only, never links."""
    if os.geteuid() == 0:
        return
    pending = [name]
    top = os.dup(dir_fd)
    try:
        while pending:
            rel = pending.pop()
            parent, _, leaf = rel.rpartition("/")
            try:
                parent_fd = open_dir_beneath(top, parent)
            except OSError:
                continue
            try:
                if not stat.S_ISDIR(os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                    continue
                with contextlib.suppress(OSError):
                    os.chmod(leaf, 0o700, dir_fd=parent_fd)  # a directory: nothing to follow
                fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent_fd)
            except OSError:
                continue
            finally:
                os.close(parent_fd)
            try:
                with os.scandir(fd) as it:
                    pending += [f"{rel}/{e.name}" for e in it if e.is_dir(follow_symlinks=False)]
            finally:
                os.close(fd)
    finally:
        os.close(top)


def _rm_rf(dir_fd: int, name: str) -> None:
    subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", name],
        cwd=f"/proc/self/fd/{dir_fd}",
        check=False,
        capture_output=True,
        timeout=600,
    )


def _write_all(root: Path, batch: list[tuple[str, TreeEntry, bytes]], hashes: HashCache) -> int:
    top = os.open(root, _DIR_FLAGS)
    dirs: dict[str, int] = {"": top}
    try:
        for path, entry, data in batch:
            parent, _, name = path.rpartition("/")
            fd = _ensure_dir(dirs, parent)
            remove_at(fd, name)
            if entry.mode == GITLINK_MODE:
                os.mkdir(name, 0o755, dir_fd=fd)
            elif entry.mode == SYMLINK_MODE:
                os.symlink(os.fsdecode(data), name, dir_fd=fd)
            else:
                mode = 0o755 if entry.mode == EXECUTABLE_MODE else 0o644
                file_fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=fd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(file_fd, view) :]
                    os.fchmod(file_fd, mode)  # whatever the umask
                    hashes.put(os.fstat(file_fd), entry.sha)
                finally:
                    os.close(file_fd)
        return len(batch)
    finally:
        for fd in dirs.values():
            os.close(fd)


def _ensure_dir(dirs: dict[str, int], rel: str) -> int:
    """A descriptor for directory `rel`, created (never through a link) as needed."""
    if rel in dirs:
        return dirs[rel]
    parent, _, name = rel.rpartition("/")
    parent_fd = _ensure_dir(dirs, parent)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise
        remove_at(parent_fd, name)
        os.mkdir(name, 0o755, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    dirs[rel] = fd
    return fd


__all__ = ["materialise", "remove_at"]

"""The runner's own listing of a worktree: `lstat` through directory descriptors, no links
followed, nothing executed.

Host git never walks a story's worktree (a nested repository's `core.fsmonitor`, a planted
`.git`, filters and drivers would all be ways onto the host). Instead this module lists it:
every directory is opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`, every file
is read relative to its directory with `O_NOFOLLOW`, and a `.git` entry is recorded, never
entered. It runs only while no sandbox process is alive (`runner.sandbox` guarantees that
outside a command), so what it lists cannot change under it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.change import Entry, Scan, kind_of
from runner.gitignore import GITIGNORE_MAX_BYTES, IgnoreRules

MAX_DEPTH = 128
"""Directories nested deeper than this are not listed (reported, or removed on reset)."""
READ_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Ident = tuple[int, int, int, int, int]


def blob_id(data: bytes) -> str:
    """The id git gives a blob of these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def ident(st: os.stat_result) -> Ident:
    """What must be unchanged for a file's bytes to be unchanged (ctime cannot be forged)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class HashCache:
    """Blob ids by `ident`, so a file nobody touched since it was last read is not re-read."""

    def __init__(self, limit: int = 500_000) -> None:
        self._ids: dict[Ident, str] = {}
        self._limit = limit

    def get(self, st: os.stat_result) -> str | None:
        return self._ids.get(ident(st))

    def put(self, st: os.stat_result, sha: str) -> None:
        if len(self._ids) >= self._limit:
            self._ids.clear()
        self._ids[ident(st)] = sha


@dataclass(frozen=True)
class Listing:
    """How to list: which rules ignore, which paths are tracked, which files to hash."""

    ignore: IgnoreRules | None
    """None lists everything (a reset must see ignored files too, to remove them)."""
    tracked: Collection[str] = frozenset()
    """Files of the base tree: never ignored, and neither are the directories holding them."""
    want_hash: Callable[[str, os.stat_result], bool] | None = None
    """Which regular files to read and hash (default: all that are listed)."""
    max_file_bytes: int = 10 * 1024 * 1024
    """Larger files are listed with their size but not read."""


def scan(root: Path, listing: Listing, hashes: HashCache | None = None) -> Scan:
    """List `root` (blocking; run it in a thread)."""
    walker = _Walker(listing, hashes)
    top = os.open(root, _DIR_FLAGS)
    try:
        walker.walk(top)
    finally:
        os.close(top)
    return walker.result


def _holding_dirs(paths: Collection[str]) -> set[str]:
    dirs: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


_Child = tuple[str, IgnoreRules | None, bool]
"""A subdirectory still to list: its path, the rules above it, whether an ancestor is ignored."""


class _Walker:
    def __init__(self, listing: Listing, hashes: HashCache | None) -> None:
        self.listing = listing
        self.hashes = hashes
        self.tracked = set(listing.tracked)
        self.holders = _holding_dirs(self.tracked)
        self.result = Scan()

    def walk(self, top: int) -> None:
        """Depth first with one open descriptor per level (no recursion: the agent chose the
        depth)."""
        frames: list[tuple[int, Iterator[_Child], int]] = []
        frames.append((top, iter(self._list_dir(top, ("", self.listing.ignore, False))), 0))
        while frames:
            fd, pending, depth = frames[-1]
            child = next(pending, None)
            if child is None:
                frames.pop()
                if fd != top:
                    os.close(fd)
                continue
            rel = child[0]
            if depth + 1 > MAX_DEPTH:
                self.result.unreadable.append(rel)
                continue
            try:
                sub = os.open(rel.rsplit("/", 1)[-1], _DIR_FLAGS, dir_fd=fd)
            except OSError:
                self.result.unreadable.append(rel)
                continue
            try:
                grandchildren = self._list_dir(sub, child)
            except BaseException:
                os.close(sub)
                raise
            frames.append((sub, iter(grandchildren), depth + 1))

    def _list_dir(self, fd: int, here: _Child) -> list[_Child]:
        """Record one directory's entries; return its subdirectories to descend into."""
        rel, rules, excluded = here
        if rules is not None:
            rules = rules.enter(rel, _read_gitignore(fd))
        subdirs: list[_Child] = []
        with os.scandir(fd) as it:
            names = sorted(entry.name for entry in it)
        for name in names:
            path = f"{rel}/{name}" if rel else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                self.result.links[(st.st_dev, st.st_ino)] += 1
            if name.casefold() == ".git":
                self.result.repo_markers.append(path)
                continue
            child_excluded = excluded
            if rules is not None:
                if path not in self.tracked and path not in self.holders:
                    if excluded or rules.ignored(path, is_dir=is_dir):
                        continue
                elif is_dir and not excluded:
                    child_excluded = rules.ignored(path, is_dir=True)
            self.result.entries[path] = self._entry(fd, name, path, st)
            if is_dir:
                subdirs.append((path, rules, child_excluded))
        return subdirs

    def _wants(self, path: str, st: os.stat_result) -> bool:
        listing = self.listing
        if st.st_size > listing.max_file_bytes:
            return False
        return listing.want_hash is None or listing.want_hash(path, st)

    def _entry(self, fd: int, name: str, path: str, st: os.stat_result) -> Entry:
        kind = kind_of(st.st_mode)
        sha: str | None = None
        target: str | None = None
        hashes = self.hashes
        if kind == "symlink":
            target = os.readlink(name, dir_fd=fd)
            sha = blob_id(os.fsencode(target))
        elif kind == "file" and self._wants(path, st):
            sha = hashes.get(st) if hashes is not None else None
            if sha is None:
                sha = _hash_file(fd, name, st)
                if sha is None:
                    self.result.unreadable.append(path)
                elif hashes is not None:
                    hashes.put(st, sha)
        return Entry(
            kind=kind,
            mode=st.st_mode,
            size=st.st_size,
            nlink=st.st_nlink,
            dev=st.st_dev,
            ino=st.st_ino,
            sha=sha,
            target=target,
        )


def _hash_file(fd: int, name: str, st: os.stat_result) -> str | None:
    data = read_file_at(fd, name, st)
    return None if data is None else blob_id(data)


def read_file_at(fd: int, name: str, expected: os.stat_result | None = None) -> bytes | None:
    """A regular file's bytes, relative to directory `fd`, never through a link; None if it
    cannot be read or is not the file `expected` describes."""
    try:
        file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
    except OSError:
        return None
    try:
        st = os.fstat(file_fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if expected is not None and (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
            return None
        chunks = []
        while chunk := os.read(file_fd, READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(file_fd)


def _read_gitignore(fd: int) -> bytes | None:
    """This directory's `.gitignore`, unless it is a symlink (git does not follow those)."""
    try:
        file_fd = os.open(".gitignore", _FILE_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.ENOTDIR):
            raise
        return None
    try:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            return None
        return os.read(file_fd, GITIGNORE_MAX_BYTES)
    finally:
        os.close(file_fd)


def open_dir_beneath(root_fd: int, rel: str) -> int:
    """A descriptor for directory `rel` under `root_fd`, refusing any symlink on the way."""
    fd = os.dup(root_fd)
    try:
        for part in (p for p in rel.split("/") if p):
            if part in (".", ".."):
                raise OSError(errno.EINVAL, f"invalid path component in {rel!r}")
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_beneath(root: Path, rel: str) -> bytes | None:
    """The bytes of regular file `rel` under `root`, never through a symlink."""
    return _at_parent(root, rel, read_file_at)


def readlink_beneath(root: Path, rel: str) -> bytes | None:
    """The target of symlink `rel` under `root`, no link on the way followed."""

    def target(fd: int, name: str) -> bytes | None:
        try:
            return os.fsencode(os.readlink(name, dir_fd=fd))
        except OSError:
            return None

    return _at_parent(root, rel, target)


def _at_parent(root: Path, rel: str, read: Callable[[int, str], bytes | None]) -> bytes | None:
    parent, _, name = rel.rpartition("/")
    top = os.open(root, _DIR_FLAGS)
    try:
        try:
            fd = open_dir_beneath(top, parent)
        except OSError:
            return None
        try:
            return read(fd, name)
        finally:
            os.close(fd)
    finally:
        os.close(top)


__all__ = [
    "HashCache",
    "Listing",
    "blob_id",
    "open_dir_beneath",
    "read_beneath",
    "read_file_at",
    "readlink_beneath",
    "scan",
]

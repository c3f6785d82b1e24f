"""Making an unpacked image fit to be a sandbox's read-only root.

The image is untrusted: its links may point anywhere on the host, so nothing here follows
one. Device nodes go (the sandbox mounts its own /dev), setuid and setgid bits go (nothing
in the sandbox may gain privileges, and the kernel's no_new_privs aside, a root-owned setuid
binary on the runner's disk is a bad thing to keep), and the mount points the sandbox needs
are made now, because a read-only root cannot get them later.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from runner.images.errors import NoShell

SHELL = "/bin/sh"
MOUNT_DIRS = ("proc", "dev", "sys", "tmp", "run", "workspace", "home/sandbox", "var/tmp")
"""Directories bubblewrap mounts over (`/workspace` is the worktree, `/home/sandbox` HOME)."""
MOUNT_FILES = ("etc/passwd", "etc/group", "etc/hosts", "etc/hostname", "etc/resolv.conf")
"""Files the sandbox binds its own versions over; bwrap can only bind onto existing ones."""
MAX_LINKS = 40


def sanitize(root: Path) -> int:
    """Drop device nodes and setuid/setgid bits; make the root searchable. Returns the size
    in bytes of what is left (allocated blocks, hard links counted once)."""
    root.chmod(0o755)
    seen: set[tuple[int, int]] = set()
    size = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = os.path.join(top, name)
            st = os.lstat(path)
            mode = st.st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
                os.unlink(path)
                continue
            if not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_blocks * 512
    return size + os.lstat(root).st_blocks * 512


def check_shell(root: Path, image: str) -> None:
    """The image must have a `/bin/sh` that is an executable file (links resolved inside
    the image, never on the host)."""
    target = resolve_inside(root, SHELL)
    if target is not None:
        st = os.lstat(target)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return
    raise NoShell(f"image {image} has no shell ({SHELL}); commands need one to run")


def resolve_inside(root: Path, path: str) -> Path | None:
    """Where `path` leads inside the image rooted at `root` (symlinks followed the way the
    sandbox would see them, `..` never above the root), or None if it leads nowhere."""
    parts = list(PurePosixPath(path).parts[1:])
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        try:
            st = os.lstat(here)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_LINKS:
                return None
            target = PurePosixPath(os.readlink(here))
            if target.is_absolute():
                done = []
                parts = list(target.parts[1:]) + parts
            else:
                parts = list(target.parts) + parts
            continue
        done.append(part)
    return root.joinpath(*done)


def make_mount_points(root: Path) -> None:
    """Create `MOUNT_DIRS` and empty `MOUNT_FILES` where the image lacks them. Works through
    directory descriptors opened with O_NOFOLLOW: a path the image made a link is left as
    it is (bwrap resolves it inside the sandbox)."""
    for rel in MOUNT_DIRS:
        _make(root, rel, directory=True)
    for rel in MOUNT_FILES:
        _make(root, rel, directory=False)


def _make(root: Path, rel: str, *, directory: bool) -> None:
    *parents, leaf = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in parents:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            try:
                child = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    return  # a link or a file: the image's own arrangement
                raise
            os.close(fd)
            fd = child
        if directory:
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf, 0o755, dir_fd=fd)
        else:
            with contextlib.suppress(FileExistsError):
                os.close(
                    os.open(
                        leaf,
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o644,
                        dir_fd=fd,
                    )
                )
    finally:
        os.close(fd)


__all__ = [
    "MOUNT_DIRS",
    "MOUNT_FILES",
    "SHELL",
    "check_shell",
    "make_mount_points",
    "resolve_inside",
    "sanitize",
]

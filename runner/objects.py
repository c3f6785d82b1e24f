"""Git plumbing on a runner's mirror: read trees, write a story's commit, merge, stream blobs.

None of these commands has a work tree: `GIT_DIR` is the mirror (the runner's own, never
visible in the sandbox), there is no `GIT_WORK_TREE`, and system and global config are off
(`app.gitcmd.git_env`). A commit is written with `git fast-import` from bytes the runner read
itself; a rebase is `git merge-tree --write-tree`, which merges trees in the object store.
So nothing in a worktree (hooks, `core.fsmonitor`, filters, drivers, `.gitattributes`, a
nested repository) is ever seen, let alone run, by host git.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.gitcmd import GIT_TIMEOUT, GitError, git_env, run_git
from runner.change import TreeEntry
from runner.mirror import Mirror


@dataclass(frozen=True)
class Identity:
    """Author and committer of story commits."""

    name: str = "baro-bot"
    email: str = "baro-bot@users.noreply.github.com"

    def env(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }

    def signature(self, when: int) -> bytes:
        return f"{self.name} <{self.email}> {when} +0000".encode()


@dataclass(frozen=True)
class Tree:
    """A commit's tree, flattened: path → entry, with blob sizes (for cheap comparisons)."""

    entries: dict[str, TreeEntry]
    sizes: dict[str, int]


async def read_tree(mirror: Mirror, rev: str) -> Tree:
    out = await mirror.git(["ls-tree", "-r", "-z", "-l", "--full-tree", rev])
    entries: dict[str, TreeEntry] = {}
    sizes: dict[str, int] = {}
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, _kind, sha, size = meta.split(maxsplit=3)
        entries[path] = TreeEntry(mode, sha)
        if size.strip().isdigit():
            sizes[path] = int(size)
    return Tree(entries, sizes)


async def changed_paths(mirror: Mirror, old: str, new: str) -> list[str]:
    out = await mirror.git(["diff-tree", "-r", "-z", "--name-only", "--no-renames", old, new])
    return [p for p in out.split("\0") if p]


async def numstat(mirror: Mirror, old: str, new: str) -> list[tuple[str, str, str]]:
    """(added, removed, path) per changed file; "-" for binary files."""
    out = await mirror.git(["diff-tree", "-r", "-z", "--numstat", "--no-renames", old, new])
    rows = []
    for record in out.split("\0"):
        if record.count("\t") >= 2:
            added, removed, path = record.split("\t", 2)
            rows.append((added, removed, path))
    return rows


ReadContent = Callable[[str, TreeEntry], Awaitable[bytes]]
"""The bytes of a file or link target the commit is to hold (read from the worktree)."""


async def write_commit(
    mirror: Mirror,
    parent: str,
    updates: Mapping[str, TreeEntry | None],
    read: ReadContent,
    message: str,
    identity: Identity,
) -> str:
    """A commit on `parent` with `updates` applied; only `read`'s bytes enter the object store."""
    ref = f"refs/baro/tmp/{secrets.token_hex(8)}"
    when = int(time.time())
    body = message.encode()
    head = b"".join(
        [
            b"feature done\n",
            f"commit {ref}\n".encode(),
            b"author " + identity.signature(when) + b"\n",
            b"committer " + identity.signature(when) + b"\n",
            b"data %d\n" % len(body),
            body,
            b"\n",
            f"from {parent}\n".encode(),
        ]
    )

    async def feed(stdin: asyncio.StreamWriter) -> None:
        stdin.write(head)
        for path in sorted(p for p, e in updates.items() if e is None):
            stdin.write(b"D " + quote_path(path) + b"\n")
        for path in sorted(p for p, e in updates.items() if e is not None):
            entry = updates[path]
            assert entry is not None
            data = await read(path, entry)
            stdin.write(f"M {entry.mode} inline ".encode() + quote_path(path) + b"\n")
            stdin.write(b"data %d\n" % len(data))
            stdin.write(data)
            stdin.write(b"\n")
            await stdin.drain()
        stdin.write(b"\ndone\n")

    await _run_fed(mirror, ["fast-import", "--quiet", "--date-format=raw"], feed)
    try:
        return (await mirror.git(["rev-parse", "--verify", f"{ref}^{{commit}}"])).strip()
    finally:
        with contextlib.suppress(GitError):
            await mirror.git(["update-ref", "-d", ref])


async def commit_tree(
    mirror: Mirror, tree: str, parent: str, message: str, identity: Identity
) -> str:
    out = await mirror.git(["commit-tree", tree, "-p", parent, "-m", message], env=identity.env())
    return out.strip()


@dataclass(frozen=True)
class Merge:
    tree: str
    conflicts: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not self.conflicts


async def merge(mirror: Mirror, onto: str, ours: str) -> Merge:
    """Three-way merge of `ours` (one story commit) into `onto`, in the object store only.

    A conflicted merge still writes a tree: its conflicted files hold the usual markers.
    """
    args = ["merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", onto, ours]
    proc = await _git(mirror, args, stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT)
    if proc.returncode not in (0, 1):
        text = err.decode(errors="replace").strip()
        raise GitError(f"git merge-tree failed (exit {proc.returncode}): {text[-2000:]}")
    tree, *rest = out.decode(errors="surrogateescape").split("\0")
    conflicts = tuple(dict.fromkeys(p for p in rest if p))
    return Merge(tree.strip(), conflicts if proc.returncode == 1 else ())


async def stream_blobs(mirror: Mirror, shas: Sequence[str]) -> AsyncIterator[bytes]:
    """The contents of `shas`, in order, from one `git cat-file --batch` process; the
    requests are written ahead of the answers, so there is no round trip per blob."""
    if not shas:
        return
    proc = await _git(mirror, ["cat-file", "--batch"], stdin=PIPE, stdout=PIPE, stderr=DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def ask() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(shas), 256):
                stdin.write("".join(f"{sha}\n" for sha in shas[start : start + 256]).encode())
                await stdin.drain()
            stdin.close()

    asking = asyncio.ensure_future(ask())
    try:
        for sha in shas:
            header = (await stdout.readline()).decode().split()
            if len(header) != 3:
                raise GitError(f"git cat-file: object {sha} is missing from the mirror")
            data = await stdout.readexactly(int(header[2]) + 1)
            yield data[:-1]
        await asking
    finally:
        asking.cancel()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL


async def _git(
    mirror: Mirror, args: Sequence[str], *, stdin: int, stdout: int, stderr: int
) -> asyncio.subprocess.Process:
    """git on the mirror with baro's pinned environment (no work tree, no user config)."""
    return await asyncio.create_subprocess_exec(
        "git",
        *args,
        env=git_env(None, {"GIT_DIR": str(mirror.path)}),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        limit=1024 * 1024,
    )


async def _run_fed(
    mirror: Mirror, args: Sequence[str], feed: Callable[[asyncio.StreamWriter], Awaitable[None]]
) -> None:
    """Run git with `feed` writing its stdin; raise GitError with its stderr on failure."""
    proc = await _git(mirror, args, stdin=PIPE, stdout=DEVNULL, stderr=PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    err_task = asyncio.ensure_future(proc.stderr.read())
    try:
        try:
            await asyncio.wait_for(feed(proc.stdin), GIT_TIMEOUT)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # git stopped reading: its stderr says why
        await asyncio.wait_for(proc.wait(), GIT_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = await err_task
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip()
        raise GitError(f"git {args[0]} failed (exit {proc.returncode}): {text[-2000:]}")


def quote_path(path: str) -> bytes:
    """A path as git's C-style quoted string (fast-import takes any byte that way)."""
    raw = path.encode("utf-8", errors="surrogateescape")
    out = bytearray(b'"')
    for byte in raw:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    out += b'"'
    return bytes(out)


def tree_changes(old: Mapping[str, TreeEntry], new: Mapping[str, TreeEntry]) -> Iterable[str]:
    """Paths whose entries differ between two flattened trees."""
    for path in old.keys() | new.keys():
        if old.get(path) != new.get(path):
            yield path


__all__ = [
    "Identity",
    "Merge",
    "Tree",
    "changed_paths",
    "commit_tree",
    "merge",
    "numstat",
    "quote_path",
    "read_tree",
    "run_git",
    "stream_blobs",
    "tree_changes",
    "write_commit",
]

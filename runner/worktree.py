"""A story attempt's worktree: a plain directory holding the run-branch head, and its change.

There is no `.git` in it and no git worktree registration: the runner writes the checkout
itself (`runner.checkout`), lists it itself (`runner.scan`) and builds the story's commit in
the mirror from that listing (`runner.objects`). Whatever the agent plants there (a nested
repository with `core.fsmonitor`, a `.git` file or symlink, hooks, filters, attributes) is
data to the runner: listed, refused if it would be committed, removed on reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.gitcmd import GitError
from runner.change import SYMLINK_MODE, Caps, Change, TreeEntry, compute_change
from runner.checkout import materialise
from runner.gitignore import DEFAULT_EXCLUDES, IgnoreRules
from runner.mirror import Mirror, RepoRef
from runner.objects import Identity, Tree, read_tree, stream_blobs, write_commit
from runner.pidns import require_quiet
from runner.scan import HashCache, Listing, blob_id, read_beneath, readlink_beneath, scan

TREES_KEPT = 4
"""Flattened trees a worktree keeps (its base, a merge result, the next base)."""


@dataclass
class Worktree:
    """One story attempt's checkout. `base` is the run-branch commit its files sit on.

    `base` moves forward when landing merges the story onto a newer run-branch head.
    """

    path: Path
    mirror: Mirror
    repo: RepoRef
    branch: str
    base: str
    run_id: str
    story_id: str
    attempt: int
    identity: Identity = field(default_factory=Identity)
    caps: Caps = field(default_factory=Caps)
    hashes: HashCache = field(default_factory=HashCache)
    excludes: tuple[str, ...] = ()
    """More ignore patterns (`/node_modules`: what `setup:` put there is never committed)."""
    _trees: dict[str, Tree] = field(default_factory=dict, repr=False)

    async def tree(self, rev: str | None = None) -> Tree:
        """The flattened tree of `rev` (default: `base`), cached per commit."""
        rev = rev or self.base
        cached = self._trees.get(rev)
        if cached is None:
            cached = await read_tree(self.mirror, rev)
            if len(self._trees) >= TREES_KEPT:
                self._trees.pop(next(iter(self._trees)))
            self._trees[rev] = cached
        return cached


async def inspect(worktree: Worktree) -> Change:
    """The story's change against `base`, with everything that may not be committed refused.

    Read-only, so it is safe for a progress report or a check before verification.
    """
    require_quiet(worktree.path)
    base = await worktree.tree()
    listing = Listing(
        ignore=IgnoreRules.root((*DEFAULT_EXCLUDES, *worktree.excludes)),
        tracked=frozenset(base.entries),
        max_file_bytes=worktree.caps.max_file_bytes,
    )
    found = await asyncio.to_thread(scan, worktree.path, listing, worktree.hashes)
    return compute_change(base.entries, found, worktree.caps)


async def reset_to(worktree: Worktree, rev: str) -> int:
    """Make the worktree hold exactly `rev`'s tree (a commit or a tree id); returns how many
    entries were written."""
    require_quiet(worktree.path)
    tree = await worktree.tree(rev)

    def read_blobs(shas: Sequence[str]) -> AsyncIterator[bytes]:
        return stream_blobs(worktree.mirror, shas)

    return await materialise(worktree.path, tree, read_blobs, worktree.hashes)


async def changed_files(worktree: Worktree) -> list[str]:
    """Paths the story changed relative to `base` (refused ones included, by their path)."""
    change = await inspect(worktree)
    return sorted(set(change.paths) | {r.path for r in change.refusals})


async def commit_change(worktree: Worktree, change: Change, message: str) -> str:
    """The story's commit on `base`, from the bytes in the worktree (re-read and checked
    against the listing: nothing runs in between, so a mismatch is a runner bug)."""

    require_quiet(worktree.path)

    async def read(path: str, entry: TreeEntry) -> bytes:
        if entry.mode == SYMLINK_MODE:
            data = await asyncio.to_thread(readlink_beneath, worktree.path, path)
        else:
            data = await asyncio.to_thread(read_beneath, worktree.path, path)
        if data is None or blob_id(data) != entry.sha:
            raise GitError(f"{path} changed while its commit was being written")
        return data

    return await write_commit(
        worktree.mirror, worktree.base, change.updates, read, message, worktree.identity
    )


__all__ = [
    "Identity",
    "Worktree",
    "changed_files",
    "commit_change",
    "inspect",
    "reset_to",
]

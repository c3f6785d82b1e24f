"""Where a story runs: a worktree at the run-branch head, from a per-repository mirror.

`Workspaces` owns the runner's data directory:

    <data_dir>/mirrors/<owner>/<repo>.git        bare mirror (+ `.lock` beside it)
    <data_dir>/worktrees/<process>/<run>-<story>-<attempt>-<random>
    <data_dir>/worktrees/<process>.lock          held while that process lives

(`runner.housekeeping` removes what dead processes and idle repositories leave behind.)

A story attempt gets `prepare` (or the `worktree` context manager), lets the agent edit
files, then `land`s one commit; `find_landed` lets a re-delivered job see that its story
already landed instead of committing twice. A worktree is a plain directory the runner
writes and lists itself (`runner.worktree`); a kept one is reset by rewriting only what
differs, and removing one never follows a link the agent left in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from app.gitcmd import GitAuth, GitError
from runner.checkout import remove_at
from runner.commit_message import (
    RUN_TRAILER,
    STORY_TRAILER,
    CoAuthor,
    CommitMessage,
    is_story_commit,
    render_commit_message,
)
from runner.housekeeping import WorktreeOwner
from runner.landing import Conflict, Landed, LandError, OnConflict, land
from runner.mirror import Mirror, MirrorCache, RepoRef, check_branch
from runner.pidns import SandboxProcessesAlive, require_quiet
from runner.scan import HashCache
from runner.worktree import Identity, Worktree, changed_files, inspect, reset_to

log = logging.getLogger(__name__)

IDLE_WORKTREES = 4
"""Checkouts kept per repository for reuse by the next stories."""
IDLE_WORKTREE_SECONDS = 900.0
"""A kept checkout nobody reused for this long is removed (disk, and its mirror's idleness)."""
FRESH_HEAD_SECONDS = 2.0
"""A branch head `find_landed` fetched this recently serves the next `prepare` of that
branch instead of a second fetch (landing catches up with anything newer anyway)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Workspaces:
    """Mirrors and worktrees under one data directory; one instance per runner process."""

    def __init__(
        self, data_dir: Path, *, identity: Identity | None = None, owner: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.identity = identity or Identity()
        self.mirrors = MirrorCache(data_dir / "mirrors")
        # The end of a runner id (pid, random) is what makes it unique: keep that part.
        name = _UNSAFE.sub("_", owner or f"{os.getpid()}-{secrets.token_hex(3)}")[-80:]
        self.owner = WorktreeOwner(data_dir / "worktrees", name)
        self.worktrees_dir = self.owner.dir
        self._idle: dict[Mirror, list[tuple[Path, HashCache, float]]] = {}
        self._fresh: dict[tuple[Path, str], tuple[str, float]] = {}

    async def warm(self, repo: RepoRef, branch: str, sha: str, auth: GitAuth) -> bool:
        """Fetch `branch` unless this mirror holds `sha` already; True when it fetched."""
        check_branch(branch)
        mirror = self.mirrors.get(repo)
        if await mirror.has_commit(sha):
            return False
        await mirror.fetch(branch, auth)
        return True

    async def prepare(
        self,
        repo: RepoRef,
        branch: str,
        auth: GitAuth,
        *,
        run_id: str,
        story_id: str,
        attempt: int,
        known_head: str | None = None,
    ) -> Worktree:
        """A worktree holding the current head of `branch`: fetched just now, or
        `known_head` (what the run's last landing pushed) when this mirror has it already
        (pushed from here): a story dispatched because its dependencies landed starts on a
        head that holds them, and a sibling landing later is merged in at its landing."""
        check_branch(branch)
        mirror = self.mirrors.get(repo)
        self._ensure_worktrees_dir()
        fresh = self._fresh.pop((mirror.path, branch), None)
        if fresh is not None and time.monotonic() - fresh[1] <= FRESH_HEAD_SECONDS:
            head = fresh[0]
        elif known_head is not None and await mirror.has_commit(known_head):
            head = known_head
        else:  # a warm-up (`app.warmup`) may be fetching it right now
            head = await mirror.fetch(branch, auth, unless=known_head)
        pool = self._idle.get(mirror, [])
        while True:
            reused = bool(pool)
            if reused:
                path, hashes, _kept = pool.pop()
            else:
                name = "-".join(
                    [_safe(run_id), _safe(story_id), str(int(attempt)), secrets.token_hex(3)]
                )
                path, hashes = self.worktrees_dir / name, HashCache()
                path.mkdir(mode=0o755)
            wt = Worktree(
                path=path,
                mirror=mirror,
                repo=repo,
                branch=branch,
                base=head,
                run_id=run_id,
                story_id=story_id,
                attempt=attempt,
                identity=self.identity,
                hashes=hashes,
            )
            try:
                await reset_to(wt, head)
                return wt
            except (GitError, OSError) as err:
                await _remove(path)
                if not reused:
                    raise
                log.warning("cannot reuse worktree %s (%s); removed it", path, err)

    async def cleanup(self, worktree: Worktree) -> None:
        """Keep the checkout for the next story of this repository (a reset rewrites only
        the files that differ, where a fresh checkout writes them all), or remove it."""
        pool = self._idle.setdefault(worktree.mirror, [])
        try:
            require_quiet(worktree.path)
        except SandboxProcessesAlive as err:
            log.error("not reusing worktree %s: %s", worktree.path, err)
            return
        if len(pool) < IDLE_WORKTREES and worktree.path.is_dir():
            pool.append((worktree.path, worktree.hashes, time.monotonic()))
            return
        await cleanup(worktree)

    async def trim_idle(self, max_idle_seconds: float = IDLE_WORKTREE_SECONDS) -> int:
        """Remove kept checkouts nobody reused for `max_idle_seconds`; returns how many."""
        removed = 0
        now = time.monotonic()
        for key, (_head, seen) in list(self._fresh.items()):
            if now - seen > FRESH_HEAD_SECONDS:
                del self._fresh[key]
        cutoff = now - max_idle_seconds
        for pool in self._idle.values():
            stale = [entry for entry in pool if entry[2] < cutoff]
            for entry in stale:
                pool.remove(entry)
            for path, _hashes, _kept in stale:
                await _remove(path)
                removed += 1
        return removed

    def close(self) -> None:
        """Give up this process's claim on its worktrees (housekeeping may remove them)."""
        self.owner.release()

    @contextlib.asynccontextmanager
    async def worktree(
        self,
        repo: RepoRef,
        branch: str,
        auth: GitAuth,
        *,
        run_id: str,
        story_id: str,
        attempt: int,
        known_head: str | None = None,
    ) -> AsyncIterator[Worktree]:
        """`prepare`, and `cleanup` however the block ends."""
        wt = await self.prepare(
            repo,
            branch,
            auth,
            run_id=run_id,
            story_id=story_id,
            attempt=attempt,
            known_head=known_head,
        )
        try:
            yield wt
        finally:
            await asyncio.shield(self.cleanup(wt))

    async def find_landed(
        self, repo: RepoRef, branch: str, auth: GitAuth, run_id: str, story_id: str
    ) -> str | None:
        """The sha of this story's commit on the run branch (freshly fetched), if any."""
        mirror = self.mirrors.get(repo)
        head = await mirror.fetch(branch, auth)
        self._fresh[(mirror.path, branch)] = (head, time.monotonic())
        out = await mirror.git(
            [
                "log",
                "--format=%H%x00%B%x1e",
                "--fixed-strings",
                "--all-match",
                f"--grep={RUN_TRAILER}: {run_id}",
                f"--grep={STORY_TRAILER}: {story_id}",
                head,
            ]
        )
        for record in out.split("\x1e"):
            sha, _, body = record.strip("\n").partition("\0")
            if sha and is_story_commit(body, run_id, story_id):
                return sha
        return None

    def _ensure_worktrees_dir(self) -> None:
        self.owner.acquire()


async def cleanup(worktree: Worktree) -> None:
    """Remove the worktree; never raises, never follows a link left in it."""
    await _remove(worktree.path)


async def _remove(path: Path) -> None:
    try:
        require_quiet(path)
    except SandboxProcessesAlive as err:  # its processes would not die: leave it alone
        log.error("not removing worktree %s: %s", path, err)
        return

    def remove() -> None:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            remove_at(parent, path.name)
        finally:
            os.close(parent)

    try:
        await asyncio.to_thread(remove)
    except OSError as err:
        log.warning("removing worktree %s failed: %s", path, err)


def _safe(value: str) -> str:
    return _UNSAFE.sub("_", value)[:40] or "_"


__all__ = [
    "CoAuthor",
    "CommitMessage",
    "Conflict",
    "Identity",
    "LandError",
    "Landed",
    "OnConflict",
    "RepoRef",
    "Workspaces",
    "Worktree",
    "changed_files",
    "cleanup",
    "inspect",
    "land",
    "render_commit_message",
]

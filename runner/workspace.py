"""Where a story runs: a worktree at the run-branch head, from a per-repository mirror.

`Workspaces` owns the runner's data directory:

    <data_dir>/mirrors/<owner>/<repo>.git        bare mirror (+ `.lock` beside it)
    <data_dir>/worktrees/<process>/<run>-<story>-<attempt>-<random>
    <data_dir>/worktrees/<process>.lock          held while that process lives

(`runner.housekeeping` removes what dead processes and idle repositories leave behind.)

A story attempt gets `prepare` (or the `worktree` context manager), lets the agent edit
files, then `land`s one commit; `find_landed` lets a re-delivered job see that its story
already landed instead of committing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

from app.gitcmd import GitAuth, GitError, run_git
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
from runner.worktree import DiffStat, Identity, Worktree, changed_files, diff_stat

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
        self._idle: dict[Mirror, list[tuple[Path, Path, float]]] = {}
        self._fresh: dict[tuple[Path, str], tuple[str, float]] = {}

    async def prepare(
        self,
        repo: RepoRef,
        branch: str,
        auth: GitAuth,
        *,
        run_id: str,
        story_id: str,
        attempt: int,
    ) -> Worktree:
        """A fresh detached worktree at the current head of `branch` (fetched just now)."""
        check_branch(branch)
        mirror = self.mirrors.get(repo)
        self._ensure_worktrees_dir()
        fresh = self._fresh.pop((mirror.path, branch), None)
        if fresh is not None and time.monotonic() - fresh[1] <= FRESH_HEAD_SECONDS:
            head = fresh[0]
        else:
            head = await mirror.fetch(branch, auth)
        reused = await self._reuse(mirror, head)
        if reused is not None:
            path, git_dir = reused
        else:
            name = "-".join(
                [_safe(run_id), _safe(story_id), str(int(attempt)), secrets.token_hex(3)]
            )
            path = self.worktrees_dir / name
            async with mirror.locked():
                await mirror.git(["worktree", "add", "--quiet", "--detach", str(path), head])
            try:
                git_dir = _admin_dir(path, mirror)
            except BaseException:
                await _remove(path, mirror)
                raise
        return Worktree(
            path=path,
            git_dir=git_dir,
            mirror=mirror,
            repo=repo,
            branch=branch,
            base=head,
            run_id=run_id,
            story_id=story_id,
            attempt=attempt,
            identity=self.identity,
        )

    async def cleanup(self, worktree: Worktree) -> None:
        """Keep the checkout for the next story of this repository (a reset rewrites only
        the files that differ, where a fresh checkout writes them all), or remove it."""
        pool = self._idle.setdefault(worktree.mirror, [])
        if len(pool) < IDLE_WORKTREES and worktree.path.is_dir():
            pool.append((worktree.path, worktree.git_dir, time.monotonic()))
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
        for mirror, pool in list(self._idle.items()):
            stale = [entry for entry in pool if entry[2] < cutoff]
            for entry in stale:
                pool.remove(entry)
            for path, _git_dir, _kept in stale:
                await _remove(path, mirror)
                removed += 1
        return removed

    def close(self) -> None:
        """Give up this process's claim on its worktrees (housekeeping may remove them)."""
        self.owner.release()

    async def _reuse(self, mirror: Mirror, head: str) -> tuple[Path, Path] | None:
        """An idle worktree of this mirror, reset to `head` and cleaned, if one is left."""
        pool = self._idle.get(mirror, [])
        while pool:
            path, git_dir, _kept = pool.pop()
            env = {"GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(path)}
            try:
                for state in ("rebase-merge", "rebase-apply"):
                    if (git_dir / state).exists():
                        await run_git(["rebase", "--abort"], cwd=path, env=env)
                await run_git(["reset", "--hard", "--quiet", head], cwd=path, env=env)
                await run_git(["clean", "-ffdxq"], cwd=path, env=env)
                (path / ".git").write_text(f"gitdir: {git_dir}\n")
                return path, git_dir
            except (GitError, OSError) as err:
                log.warning("cannot reuse worktree %s (%s); removing it", path, err)
                await _remove(path, mirror)
        return None

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
    ) -> AsyncIterator[Worktree]:
        """`prepare`, and `cleanup` however the block ends."""
        wt = await self.prepare(
            repo, branch, auth, run_id=run_id, story_id=story_id, attempt=attempt
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
    """Remove the worktree and prune its record in the mirror; never raises for git errors."""
    await _remove(worktree.path, worktree.mirror)


async def _remove(path: Path, mirror: Mirror) -> None:
    try:
        await mirror.git(["worktree", "remove", "--force", "--force", str(path)])
    except GitError as err:
        log.warning("git worktree remove %s failed, deleting it: %s", path, err)
    await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
    try:
        async with mirror.locked():
            await mirror.git(["worktree", "prune"])
    except GitError as err:
        log.warning("git worktree prune in %s failed: %s", mirror.path, err)


def _admin_dir(path: Path, mirror: Mirror) -> Path:
    """The worktree's git directory inside the mirror, read before the agent can touch it."""
    text = (path / ".git").read_text().strip()
    git_dir = Path(text.removeprefix("gitdir:").strip())
    if not git_dir.is_absolute():
        git_dir = (path / git_dir).resolve()
    if not git_dir.resolve().is_relative_to((mirror.path / "worktrees").resolve()):
        raise GitError(f"unexpected worktree git dir {git_dir}")
    return git_dir


def _safe(value: str) -> str:
    return _UNSAFE.sub("_", value)[:40] or "_"


__all__ = [
    "CoAuthor",
    "CommitMessage",
    "Conflict",
    "DiffStat",
    "Identity",
    "LandError",
    "Landed",
    "OnConflict",
    "RepoRef",
    "Workspaces",
    "Worktree",
    "changed_files",
    "cleanup",
    "diff_stat",
    "land",
    "render_commit_message",
]

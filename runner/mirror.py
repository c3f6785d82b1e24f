"""One bare mirror per repository on a runner, shared by every story of that repository.

Stories of one repository run concurrently, possibly in several runner processes on one
machine, and all of them fetch into (and add worktrees to) the same mirror. Every mutation
of the mirror therefore happens under its lock: an `asyncio.Lock` for this process plus an
`flock` on `<mirror>.lock` for the others. The stored remote URL never holds credentials;
the token reaches git only through `GitAuth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.gitcmd import GitAuth, GitError, run_git

FETCH_TRIES = 3
RETRY_DELAY = 0.25
# How git reports a failure worth retrying: a 5xx, a dropped or timed-out connection.
_TRANSIENT_SIGNS = (
    "returned error: 5",
    "RPC failed",
    "remote end hung up unexpectedly",
    "Connection reset",
    "Connection timed out",
    "Operation timed out",
    "early EOF",
)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]+")


@dataclass(frozen=True)
class RepoRef:
    """A repository as the runner sees it: `owner/name` and a credential-free clone URL."""

    full_name: str
    clone_url: str

    def __post_init__(self) -> None:
        owner, _, name = self.full_name.partition("/")
        for part in (owner, name):
            if not _NAME.fullmatch(part) or part in {".", ".."} or part.endswith(".git"):
                raise ValueError(f"invalid repository name {self.full_name!r}")
        url = urlsplit(self.clone_url)
        if url.scheme not in {"https", "http"} or not url.hostname:
            raise ValueError("clone_url must be an http(s) URL")
        if url.username or url.password:
            raise ValueError("clone_url must not carry credentials")


def is_transient(error: GitError) -> bool:
    """A failure of the network or of the server, not of our request."""
    return any(sign in str(error) for sign in _TRANSIENT_SIGNS)


def check_branch(branch: str) -> str:
    """A run branch name safe to put in a refspec (no `:`/`*`/`..`, no option look-alike)."""
    if (
        not _BRANCH.fullmatch(branch)
        or branch.startswith(("-", "/"))
        or branch.endswith(("/", ".lock"))
        or ".." in branch
        or "//" in branch
    ):
        raise ValueError(f"invalid branch name {branch!r}")
    return branch


class Mirror:
    """A bare repository at `path` mirroring `repo`'s branches under `refs/heads/*`."""

    def __init__(self, path: Path, repo: RepoRef) -> None:
        self.path = path
        self.repo = repo
        self.lock_path = path.with_name(path.name + ".lock")
        self._lock = asyncio.Lock()

    async def git(
        self,
        args: Sequence[str],
        *,
        auth: GitAuth | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """git on the mirror itself; GIT_DIR is explicit so nothing is discovered from cwd."""
        return await run_git(args, auth=auth, env={"GIT_DIR": str(self.path), **(env or {})})

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Exclusive use of the mirror, within this process and across processes."""
        async with self._lock:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                delay = 0.005
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        # Polling keeps the wait cancellable, unlike a blocking flock in a thread.
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.1)
                yield
            finally:
                os.close(fd)

    async def fetch(self, branch: str, auth: GitAuth, *, unless: str | None = None) -> str:
        """Bring `branch` up to date (creating the mirror if needed); return its head sha.
        With `unless`, a commit that another fetch brought in while this one waited for the
        lock is enough: it is returned without asking the server again."""
        check_branch(branch)
        async with self.locked():
            if unless is not None and await self.has_commit(unless):
                return unless
            await self._ensure()
            ref = f"refs/heads/{branch}"
            args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin"]
            for attempt in range(1, FETCH_TRIES + 1):
                try:
                    await self.git([*args, f"+{ref}:{ref}"], auth=auth)
                    break
                except GitError as err:
                    if attempt == FETCH_TRIES or not is_transient(err):
                        raise
                    await asyncio.sleep(RETRY_DELAY * attempt)
            head = (await self.git(["rev-parse", "--verify", f"{ref}^{{commit}}"])).strip()
            os.utime(self.lock_path)  # last use, for housekeeping's idle-mirror sweep
            return head

    async def has_commit(self, sha: str) -> bool:
        """Whether the commit is in this mirror already (pushed from it, or fetched)."""
        if not (self.path / "HEAD").exists():
            return False
        try:
            await self.git(["cat-file", "-e", f"{sha}^{{commit}}"])
        except GitError:
            return False
        return True

    async def _ensure(self) -> None:
        """Create the mirror on first use: init in a temporary directory, then rename."""
        if (self.path / "HEAD").exists():
            url = (await self.git(["config", "--get", "remote.origin.url"])).strip()
            if url != self.repo.clone_url:
                await self.git(["config", "remote.origin.url", self.repo.clone_url])
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{secrets.token_hex(4)}")
        # An empty template: no sample hooks, nothing we did not put there ourselves.
        await run_git(["init", "--quiet", "--bare", "--template=", str(tmp)])
        # Only a URL, no fetch refspec: with one, every fetch and push would also update
        # `refs/remotes/origin/*`, a ref that concurrent stories would fight over.
        await run_git(
            ["config", "remote.origin.url", self.repo.clone_url], env={"GIT_DIR": str(tmp)}
        )
        os.rename(tmp, self.path)


class MirrorCache:
    """Mirrors under `<root>/<owner>/<repo>.git`, one `Mirror` object (and lock) per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mirrors: dict[Path, Mirror] = {}

    def get(self, repo: RepoRef) -> Mirror:
        owner, _, name = repo.full_name.lower().partition("/")
        path = self.root / owner / f"{name}.git"
        mirror = self._mirrors.setdefault(path, Mirror(path, repo))
        mirror.repo = repo  # the latest clone URL wins; `fetch` updates the stored remote
        return mirror


__all__ = ["GitError", "Mirror", "MirrorCache", "RepoRef", "check_branch", "is_transient"]

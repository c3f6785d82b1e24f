"""A story attempt's worktree: a checkout of the run-branch head, attached to the mirror.

Git always runs here with an explicit GIT_DIR/GIT_WORK_TREE taken when the worktree was
created. The agent can rewrite anything in the worktree, including its `.git` file; were
git to discover the repository from there, a planted `.git/config` (`core.fsmonitor`,
hooks) would run code on the runner, outside the sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.gitcmd import GitAuth, run_git
from runner.mirror import Mirror, RepoRef


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


@dataclass
class Worktree:
    """One story attempt's checkout. `base` is the run-branch commit its work sits on.

    `base` moves forward when `land` rebases onto a newer run-branch head.
    """

    path: Path
    git_dir: Path
    mirror: Mirror
    repo: RepoRef
    branch: str
    base: str
    run_id: str
    story_id: str
    attempt: int
    identity: Identity = field(default_factory=Identity)

    async def git(
        self,
        args: Sequence[str],
        *,
        auth: GitAuth | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        extra = {
            "GIT_DIR": str(self.git_dir),
            "GIT_WORK_TREE": str(self.path),
            "GIT_EDITOR": "true",
            "GIT_SEQUENCE_EDITOR": "true",
            **self.identity.env(),
            **(env or {}),
        }
        return await run_git(args, cwd=self.path, auth=auth, env=extra)

    async def head(self) -> str:
        return (await self.git(["rev-parse", "--verify", "HEAD"])).strip()


def split_z(output: str) -> list[str]:
    """Paths from a `-z` listing."""
    return [p for p in output.split("\0") if p]


async def changed_files(worktree: Worktree) -> list[str]:
    """Paths the story changed relative to `base`: committed, staged, unstaged or untracked.

    Read-only (the index is left alone), so it is safe to call for a progress report.
    """
    tracked = await worktree.git(["diff", "--name-only", "-z", "--no-renames", worktree.base])
    untracked = await worktree.git(["ls-files", "-z", "--others", "--exclude-standard"])
    return sorted(set(split_z(tracked)) | set(split_z(untracked)))


@dataclass(frozen=True)
class DiffStat:
    files: int
    insertions: int
    deletions: int


async def diff_stat(worktree: Worktree) -> DiffStat:
    """Lines added and removed relative to `base` (binary files count as a file only).

    Stages everything (`git add -A`) to see untracked files, as `land` would anyway.
    """
    await worktree.git(["add", "-A"])
    out = await worktree.git(["diff", "--cached", "--numstat", "-z", "--no-renames", worktree.base])
    files = insertions = deletions = 0
    for record in split_z(out):
        added, removed, _ = record.split("\t", 2)
        files += 1
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    return DiffStat(files, insertions, deletions)

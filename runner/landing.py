"""Landing a story: one commit, pushed fast-forward onto the run branch.

Stories land concurrently, so a push is often rejected because another story landed first;
then the commit is rebased onto the new head and pushed again. A textual conflict goes back
to the story's agent through `on_conflict`. The commit is replaced on every rebase and
never duplicated: exactly one commit per story reaches the branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.gitcmd import GitAuth, GitError
from runner.commit_message import CommitMessage, is_story_commit
from runner.mirror import RETRY_DELAY, is_transient
from runner.worktree import Worktree, split_z

WORKFLOWS_DIR = ".github/workflows/"
DETAILS_MAX = 12_000
MARKER_SCAN_MAX = 8 * 1024 * 1024

# How a lost race shows: the client's non-fast-forward check, or the server's ref update
# failing because another push moved the ref between its check and its update.
_RACE_SIGNS = ("[rejected]", "cannot lock ref", "failed to update ref", "incorrect old value")

LandErrorKind = Literal["no_change", "workflow", "push", "conflict", "verification"]


class LandError(Exception):
    """The story could not land; `message` is meant for the user (and the agent)."""

    def __init__(
        self,
        kind: LandErrorKind,
        message: str,
        files: Sequence[str] = (),
        evidence: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.kind: LandErrorKind = kind
        self.message = message
        self.files = list(files)
        self.evidence = list(evidence)


@dataclass(frozen=True)
class Conflict:
    """A rebase stopped on conflicts; the agent edits `files` under `worktree` to resolve."""

    files: tuple[str, ...]
    details: str
    worktree: Path
    round: int


@dataclass(frozen=True)
class Landed:
    sha: str
    attempts: int
    rebased: bool


OnConflict = Callable[[Conflict], Awaitable[bool]]
OnRebased = Callable[[Sequence[str]], Awaitable[None]]
"""Called after a clean rebase that brought in changes to files the story changed too (the
overlap is passed): the story's checks passed on the old base, so run them again; raise
LandError("verification") to stop the push."""


async def land(
    worktree: Worktree,
    message: CommitMessage,
    auth: GitAuth,
    *,
    max_push_attempts: int = 5,
    on_conflict: OnConflict | None = None,
    max_conflict_rounds: int = 2,
    on_rebased: OnRebased | None = None,
) -> Landed:
    """Commit everything in the worktree once and push it onto the run branch.

    Raises LandError (no_change, workflow, push, conflict). Calling it again on the same
    worktree recommits instead of stacking a second commit.
    """
    text = message.render()
    await _commit(worktree, text)
    rounds = _Rounds(max_conflict_rounds, on_rebased)
    rebased = False
    # Siblings land while the agent works: catch up before the first push rather than
    # after a rejected one (a fetch is cheaper than a refused push plus a fetch).
    try:
        head: str | None = await worktree.mirror.fetch(worktree.branch, auth)
    except GitError:
        head = None  # the push below reports what is wrong
    if head is not None and head != worktree.base:
        sha = await worktree.head()
        landed = sha if head == sha else await _story_commit(worktree, head, message)
        if landed is not None:  # an earlier push of this story went through
            return Landed(landed, 0, rebased)
        await _rebase(worktree, head, text, on_conflict, rounds)
        rebased = True
    for attempt in range(1, max_push_attempts + 1):
        await _check_workflows(worktree, "HEAD")
        sha = await worktree.head()
        try:
            await worktree.git(
                ["push", "--quiet", "--no-verify", "origin", f"HEAD:refs/heads/{worktree.branch}"],
                auth=auth,
            )
            return Landed(sha, attempt, rebased)
        except GitError as err:
            push_error = err
        try:
            head = await worktree.mirror.fetch(worktree.branch, auth)
        except GitError as err:
            raise LandError("push", f"push to {worktree.branch} failed: {push_error}") from err
        # The push may have gone through with only its answer lost (maybe with another
        # story landing on top since): then the branch already holds this story's commit.
        landed = sha if head == sha else await _story_commit(worktree, head, message)
        if landed is not None:
            return Landed(landed, attempt, rebased)
        if head != worktree.base:
            await _rebase(worktree, head, text, on_conflict, rounds)
            rebased = True
        elif is_transient(push_error):
            await asyncio.sleep(RETRY_DELAY * attempt)
        elif not _lost_race(push_error):
            raise LandError("push", f"push to {worktree.branch} failed: {push_error}")
    raise LandError(
        "push",
        f"gave up on {worktree.branch} after {max_push_attempts} push attempts "
        f"(other stories kept landing first, or the server kept failing): {push_error}",
    )


def _lost_race(error: GitError) -> bool:
    """A push refused because the branch moved: non-fast-forward, or a concurrent ref update."""
    return any(sign in str(error) for sign in _RACE_SIGNS)


async def _story_commit(worktree: Worktree, head: str, message: CommitMessage) -> str | None:
    """This story's commit among those that landed since `base`, if any."""
    out = await worktree.git(["log", "--format=%H%x00%B%x1e", f"{worktree.base}..{head}"])
    for record in out.split("\x1e"):
        sha, _, body = record.strip("\n").partition("\0")
        if sha and is_story_commit(body, message.run_id, message.story_id):
            return sha
    return None


async def _commit(worktree: Worktree, text: str) -> None:
    """Squash whatever is in the worktree into one commit on `base`."""
    await worktree.git(["reset", "--quiet", "--soft", worktree.base])
    await worktree.git(["add", "-A"])
    staged = await worktree.git(
        ["diff", "--cached", "--name-only", "-z", "--no-renames", worktree.base]
    )
    if not split_z(staged):
        raise LandError("no_change", "the story produced no changes (no work product)")
    _refuse_workflows(split_z(staged))
    await _git_commit(worktree, text)


async def _git_commit(worktree: Worktree, text: str, *extra: str) -> None:
    flags = ["--quiet", "--no-verify", "--no-gpg-sign", "--cleanup=verbatim", *extra]
    await worktree.git(["commit", *flags, "-m", text])


async def _check_workflows(worktree: Worktree, rev: str) -> None:
    names = await worktree.git(["diff", "--name-only", "-z", "--no-renames", worktree.base, rev])
    _refuse_workflows(split_z(names))


def _refuse_workflows(paths: list[str]) -> None:
    bad = sorted(p for p in paths if p.startswith(WORKFLOWS_DIR))
    if bad:
        raise LandError(
            "workflow",
            "baro's GitHub App has no workflows permission; changes to "
            f"{', '.join(bad)} cannot be pushed",
            bad,
        )


class _Rounds:
    def __init__(self, limit: int, on_rebased: OnRebased | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.on_rebased = on_rebased


async def _rebase(
    worktree: Worktree, onto: str, text: str, on_conflict: OnConflict | None, rounds: _Rounds
) -> None:
    """Replay the story's one commit onto `onto`, resolving conflicts through the agent
    (which re-verifies); a clean replay over the story's own files is re-checked too."""
    overlap: list[str] = []
    if rounds.on_rebased is not None:
        theirs = await _changed(worktree, worktree.base, onto)
        ours = await _changed(worktree, worktree.base, "HEAD")
        overlap = sorted(set(theirs) & set(ours))
    clean = True
    try:
        await worktree.git(["rebase", "--quiet", "--no-verify", "--onto", onto, worktree.base])
    except GitError as err:
        clean = False
        try:
            await _resolve(worktree, onto, err, on_conflict, rounds)
        except BaseException:
            await _abort(worktree)
            raise
    worktree.base = onto
    await _one_commit(worktree, text)
    if clean and overlap and rounds.on_rebased is not None:
        await rounds.on_rebased(overlap)


async def _changed(worktree: Worktree, old: str, new: str) -> list[str]:
    return split_z(await worktree.git(["diff", "--name-only", "-z", "--no-renames", old, new]))


async def _resolve(
    worktree: Worktree,
    onto: str,
    error: GitError,
    on_conflict: OnConflict | None,
    rounds: _Rounds,
) -> None:
    note = ""
    while True:
        files = split_z(await worktree.git(["diff", "--name-only", "-z", "--diff-filter=U"]))
        if not files:
            raise LandError("push", f"rebasing onto {worktree.branch} failed: {error}")
        if on_conflict is None or rounds.used >= rounds.limit:
            raise _conflict_error(files)
        rounds.used += 1
        details = note + await _details(worktree, onto, files)
        if not await on_conflict(Conflict(tuple(files), details, worktree.path, rounds.used)):
            raise _conflict_error(files)
        marked = await asyncio.to_thread(_files_with_markers, worktree.path, files)
        if marked:
            note = f"Conflict markers are still present in: {', '.join(marked)}.\n\n"
            continue
        await worktree.git(["add", "-A"])
        try:
            await worktree.git(["rebase", "--continue"])
            return
        except GitError as err:
            error = err
            note = ""


async def _one_commit(worktree: Worktree, text: str) -> None:
    """After a rebase: exactly one commit on `base`, carrying exactly `text`.

    A commit whose changes are already on the branch comes out of a rebase empty (or is
    dropped); it still lands, empty, so the story is recorded once.
    """
    count = int((await worktree.git(["rev-list", "--count", f"{worktree.base}..HEAD"])).strip())
    if count != 1:
        await worktree.git(["reset", "--quiet", "--soft", worktree.base])
        await _git_commit(worktree, text, "--allow-empty")
        return
    current = await worktree.git(["log", "-1", "--format=%B"])
    if current.rstrip("\n") != text.rstrip("\n"):
        await _git_commit(worktree, text, "--amend", "--allow-empty")


async def _abort(worktree: Worktree) -> None:
    with contextlib.suppress(GitError):
        await worktree.git(["rebase", "--abort"])


def _conflict_error(files: Sequence[str]) -> LandError:
    return LandError(
        "conflict",
        f"conflicts with stories that landed first in: {', '.join(files)}",
        files,
    )


async def _details(worktree: Worktree, onto: str, files: Sequence[str]) -> str:
    diff = await worktree.git(["diff", "--", *files])
    if len(diff) > DETAILS_MAX:
        diff = diff[:DETAILS_MAX] + "\n[… diff truncated]\n"
    return (
        f"Other stories landed on {worktree.branch} (now at {onto[:12]}) and changed the same "
        f"lines as this story. Edit these files so that they keep both sides' intent and hold "
        f"no conflict markers (<<<<<<<, =======, >>>>>>>): {', '.join(files)}\n\n{diff}"
    )


def _files_with_markers(root: Path, files: Sequence[str]) -> list[str]:
    """Conflicted files that still hold markers; never follows links out of the worktree."""
    top = root.resolve()
    marked = []
    for name in files:
        path = root / name
        try:
            if not path.parent.resolve().is_relative_to(top):
                marked.append(name)
                continue
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue  # a symlink or a directory holds no markers
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue  # deleting the file is a resolution
        except OSError:
            marked.append(name)
            continue
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MARKER_SCAN_MAX)
        if _has_markers(data):
            marked.append(name)
    return marked


def _has_markers(data: bytes) -> bool:
    for marker in (b"<<<<<<<", b">>>>>>>"):
        if data.startswith(marker) or b"\n" + marker in data:
            return True
    return False

"""Landing a story: one commit, pushed fast-forward onto the run branch.

The commit is built in the mirror from the runner's own listing of the worktree
(`runner.worktree.inspect`), after everything that may not be committed was refused. Stories
land concurrently, so a push is often rejected because another story landed first; then the
commit is merged onto the new head in the object store (`git merge-tree`) and pushed again.
A textual conflict goes back to the story's agent through `on_conflict`, with the conflicted
files (markers in place) written into its worktree. Exactly one commit per story reaches the
branch, and host git never runs with the worktree as its work tree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from app.gitcmd import GitAuth, GitError
from runner.change import WORKFLOWS_DIR, Change, summary
from runner.commit_message import CommitMessage, is_story_commit
from runner.mirror import RETRY_DELAY, is_transient
from runner.objects import changed_paths, commit_tree, merge
from runner.scan import read_beneath
from runner.worktree import Worktree, commit_change, inspect, reset_to

DETAILS_MAX = 12_000
MARKER_SCAN_MAX = 8 * 1024 * 1024

# How a lost race shows: the client's non-fast-forward check, or the server's ref update
# failing because another push moved the ref between its check and its update.
_RACE_SIGNS = ("[rejected]", "cannot lock ref", "failed to update ref", "incorrect old value")

T = TypeVar("T")

LandErrorKind = Literal["no_change", "workflow", "refused", "push", "conflict", "verification"]


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
    """A merge stopped on conflicts; the agent edits `files` under `worktree` to resolve."""

    files: tuple[str, ...]
    details: str
    worktree: Path
    round: int


@dataclass(frozen=True)
class Landed:
    sha: str
    attempts: int
    rebased: bool


class Turn(Protocol):
    """The run branch's landing turn: held while one story fetches, merges and pushes, so
    stories that finish together land one after another instead of racing (and rebasing
    against) each other. Released while the story's agent resolves a conflict or re-runs
    its checks, which can take minutes."""

    async def acquire(self) -> str | None:
        """Wait for the turn; returns the head the previous holder pushed (None: unknown)."""
        ...

    async def release(self, pushed: str | None = None) -> None:
        """Hand the turn on, with the head this holder pushed."""
        ...


class NoTurn:
    """Landing without a queue (a lone runner, tests): races are still handled by retries."""

    async def acquire(self) -> str | None:
        return None

    async def release(self, pushed: str | None = None) -> None:
        return None


OnConflict = Callable[[Conflict], Awaitable[bool]]
OnRebased = Callable[[Sequence[str]], Awaitable[None]]
"""Called after a clean merge that brought in changes to files the story changed too (the
overlap is passed): the story's checks passed on the old base, so run them again; raise
LandError("verification") to stop the push."""


def refusal_error(change: Change) -> LandError | None:
    """The LandError for a change holding anything that may not be committed, if it does."""
    if not change.refusals:
        return None
    files = sorted({r.path for r in change.refusals})
    lines = [r.line() for r in change.refusals]
    if all(r.kind == "workflow" for r in change.refusals):
        return LandError(
            "workflow",
            "baro's GitHub App has no workflows permission; changes to "
            f"{', '.join(files)} cannot be pushed",
            files,
            lines,
        )
    return LandError(
        "refused",
        "baro refused to commit what cannot be committed safely:\n" + summary(change.refusals),
        files,
        lines,
    )


async def land(
    worktree: Worktree,
    message: CommitMessage,
    auth: GitAuth,
    *,
    max_push_attempts: int = 5,
    on_conflict: OnConflict | None = None,
    max_conflict_rounds: int = 2,
    on_rebased: OnRebased | None = None,
    turn: Turn | None = None,
) -> Landed:
    """Commit everything in the worktree once and push it onto the run branch, in the run's
    landing turn.

    Raises LandError (no_change, workflow, refused, push, conflict, verification). Calling
    it again on the same worktree commits the same change again instead of stacking.
    """
    text = message.render()
    sha = await _commit(worktree, text)
    rounds = _Rounds(max_conflict_rounds, on_rebased, turn, on_conflict)
    rounds.known_head = await rounds.turn.acquire()
    pushed: str | None = None
    try:
        landed = await _land_in_turn(worktree, message, auth, sha, text, rounds, max_push_attempts)
        pushed = landed.sha if landed.attempts else None
        return landed
    finally:
        await rounds.turn.release(pushed)


async def _land_in_turn(
    worktree: Worktree,
    message: CommitMessage,
    auth: GitAuth,
    sha: str,
    text: str,
    rounds: _Rounds,
    max_push_attempts: int,
) -> Landed:
    on_conflict = rounds.on_conflict
    rebased = False
    mirror = worktree.mirror
    # Siblings land while the agent works: catch up before the first push rather than
    # after a rejected one (a fetch is cheaper than a refused push plus a fetch). The head
    # the previous turn pushed needs no fetch when it is here already; if the branch moved
    # otherwise since, the push is refused and the loop below fetches.
    known = rounds.known_head
    head: str | None
    if known is not None and await mirror.has_commit(known):
        head = known
    else:
        try:
            head = await mirror.fetch(worktree.branch, auth)
        except GitError:
            head = None  # the push below reports what is wrong
    if head is not None and head != worktree.base:
        landed = await _story_commit(worktree, head, message)
        if landed is not None:  # an earlier push of this story went through
            return Landed(landed, 0, rebased)
        sha = await _rebase(worktree, sha, head, text, on_conflict, rounds)
        rebased = True
    for attempt in range(1, max_push_attempts + 1):
        await _check_workflows(worktree, sha)
        try:
            await mirror.git(
                ["push", "--quiet", "--no-verify", "origin", f"{sha}:refs/heads/{worktree.branch}"],
                auth=auth,
            )
            return Landed(sha, attempt, rebased)
        except GitError as err:
            push_error = err
        try:
            head = await mirror.fetch(worktree.branch, auth)
        except GitError as err:
            raise LandError("push", f"push to {worktree.branch} failed: {push_error}") from err
        # The push may have gone through with only its answer lost (maybe with another
        # story landing on top since): then the branch already holds this story's commit.
        landed = sha if head == sha else await _story_commit(worktree, head, message)
        if landed is not None:
            return Landed(landed, attempt, rebased)
        if head != worktree.base:
            sha = await _rebase(worktree, sha, head, text, on_conflict, rounds)
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


async def _commit(worktree: Worktree, text: str) -> str:
    """The worktree's change as one commit on `base`, or a LandError saying why not."""
    change = await inspect(worktree)
    refused = refusal_error(change)
    if refused is not None:
        raise refused
    if change.empty:
        raise LandError("no_change", "the story produced no changes (no work product)")
    return await commit_change(worktree, change, text)


def _lost_race(error: GitError) -> bool:
    """A push refused because the branch moved: non-fast-forward, or a concurrent ref update."""
    return any(sign in str(error) for sign in _RACE_SIGNS)


async def _story_commit(worktree: Worktree, head: str, message: CommitMessage) -> str | None:
    """This story's commit among those that landed since `base`, if any."""
    out = await worktree.mirror.git(["log", "--format=%H%x00%B%x1e", f"{worktree.base}..{head}"])
    for record in out.split("\x1e"):
        sha, _, body = record.strip("\n").partition("\0")
        if sha and is_story_commit(body, message.run_id, message.story_id):
            return sha
    return None


async def _check_workflows(worktree: Worktree, sha: str) -> None:
    """The last guard before a push: nothing under .github/workflows/ (which the merge of
    other stories' commits cannot bring in, as those were checked the same way)."""
    names = await changed_paths(worktree.mirror, worktree.base, sha)
    bad = sorted(p for p in names if p.casefold().startswith(WORKFLOWS_DIR + "/"))
    if bad:
        raise LandError(
            "workflow",
            "baro's GitHub App has no workflows permission; changes to "
            f"{', '.join(bad)} cannot be pushed",
            bad,
        )


class _Rounds:
    def __init__(
        self,
        limit: int,
        on_rebased: OnRebased | None = None,
        turn: Turn | None = None,
        on_conflict: OnConflict | None = None,
    ) -> None:
        self.limit = limit
        self.used = 0
        self.on_rebased = on_rebased
        self.on_conflict = on_conflict
        self.turn: Turn = turn or NoTurn()
        self.known_head: str | None = None

    async def outside_turn(self, work: Awaitable[T]) -> T:
        """Agent work (a conflict, a re-check) without holding up the other stories."""
        await self.turn.release()
        try:
            return await work
        finally:
            await self.turn.acquire()


async def _rebase(
    worktree: Worktree,
    sha: str,
    onto: str,
    text: str,
    on_conflict: OnConflict | None,
    rounds: _Rounds,
) -> str:
    """The story's commit merged onto `onto` (conflicts resolved through the agent, which
    re-verifies); a clean merge over the story's own files is re-checked too. The worktree
    holds the result afterwards, so a check or a second `land` sees what is pushed."""
    mirror = worktree.mirror
    old_base = worktree.base
    overlap: list[str] = []
    if rounds.on_rebased is not None:
        theirs = await changed_paths(mirror, old_base, onto)
        ours = await changed_paths(mirror, old_base, sha)
        overlap = sorted(set(theirs) & set(ours))
    merged = await merge(mirror, onto, sha)
    await reset_to(worktree, merged.tree)
    worktree.base = onto
    if not merged.clean:
        try:
            return await _resolve(worktree, old_base, merged.conflicts, text, on_conflict, rounds)
        except BaseException:
            # Back to the story's own commit on its old base, as `git rebase --abort` would:
            # a later `land` must never commit the markers.
            await asyncio.shield(_restore(worktree, sha, old_base))
            raise
    new = await commit_tree(mirror, merged.tree, onto, text, worktree.identity)
    if overlap and rounds.on_rebased is not None:
        await rounds.outside_turn(rounds.on_rebased(overlap))
    return new


async def _restore(worktree: Worktree, sha: str, base: str) -> None:
    await reset_to(worktree, sha)
    worktree.base = base


async def _resolve(
    worktree: Worktree,
    old_base: str,
    files: Sequence[str],
    text: str,
    on_conflict: OnConflict | None,
    rounds: _Rounds,
) -> str:
    note = ""
    while True:
        if on_conflict is None or rounds.used >= rounds.limit:
            raise _conflict_error(files)
        rounds.used += 1
        details = note + await _details(worktree, old_base, files)
        conflict = Conflict(tuple(files), details, worktree.path, rounds.used)
        if not await rounds.outside_turn(on_conflict(conflict)):
            raise _conflict_error(files)
        marked = await asyncio.to_thread(files_with_markers, worktree.path, files)
        if marked:
            note = f"Conflict markers are still present in: {', '.join(marked)}.\n\n"
            continue
        return await _commit_resolution(worktree, text)


async def _commit_resolution(worktree: Worktree, text: str) -> str:
    """The resolved worktree as the story's one commit on the new base (it may be empty:
    a story whose changes are already on the branch still lands, once)."""
    change = await inspect(worktree)
    refused = refusal_error(change)
    if refused is not None:
        raise refused
    return await commit_change(worktree, change, text)


def _conflict_error(files: Sequence[str]) -> LandError:
    return LandError(
        "conflict",
        f"conflicts with stories that landed first in: {', '.join(files)}",
        files,
    )


async def _details(worktree: Worktree, old_base: str, files: Sequence[str]) -> str:
    diff = await worktree.mirror.git(
        ["diff-tree", "-p", "--no-renames", old_base, worktree.base, "--", *files]
    )
    if len(diff) > DETAILS_MAX:
        diff = diff[:DETAILS_MAX] + "\n[… diff truncated]\n"
    return (
        f"Other stories landed on {worktree.branch} (now at {worktree.base[:12]}) and changed "
        f"the same lines as this story. The files now hold both sides between conflict "
        f"markers (<<<<<<<, =======, >>>>>>>). Edit them so that they keep both sides' intent "
        f"and hold no markers: {', '.join(files)}\n\nWhat the other stories changed:\n{diff}"
    )


def files_with_markers(root: Path, files: Sequence[str]) -> list[str]:
    """Conflicted files that still hold markers; never follows links out of the worktree."""
    marked = []
    for name in files:
        data = read_beneath(root, name)
        if data is not None and _has_markers(data[:MARKER_SCAN_MAX]):
            marked.append(name)
    return marked


def _has_markers(data: bytes) -> bool:
    for marker in (b"<<<<<<<", b">>>>>>>"):
        if data.startswith(marker) or b"\n" + marker in data:
            return True
    return False

"""Landing a story: one commit, pushed fast-forward onto the run branch.

The commit is built in the mirror from the runner's own listing of the worktree
(`runner.worktree.inspect`), after everything that may not be committed was refused. Stories
land concurrently, so a push is often rejected because another story landed first; then the
commit is merged onto the new head in the object store (`git merge-tree`) and pushed again.
A textual conflict goes back to the story's agent through `on_conflict`, with the conflicted
files (markers in place) written into its worktree. Exactly one commit per story reaches the
branch, and host git never runs with the worktree as its work tree.

Stories wait for the run's landing turn in line with their commit ready (`Ready`). The holder
merges the waiting commits its mirror holds onto its own, one by one, and pushes them all at
once: siblings that finish together cost one push, not a turn each. A waiting story whose
merge would conflict, or touch files it changed too (its checks must run again), is left to
land in its own turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.gitcmd import SHA_PATTERN, GitAuth, GitError
from app.landing_turn import InLine, Waiting
from runner.change import WORKFLOWS_DIR, Change, summary
from runner.commit_message import CommitMessage, is_story_commit
from runner.mirror import RETRY_DELAY, Mirror, is_transient
from runner.objects import Identity, changed_paths, commit_tree, merge
from runner.scan import read_beneath
from runner.worktree import Worktree, commit_change, inspect, reset_to

DETAILS_MAX = 12_000
MARKER_SCAN_MAX = 8 * 1024 * 1024

# How a lost race shows: the client's non-fast-forward check, or the server's ref update
# failing because another push moved the ref between its check and its update.
_RACE_SIGNS = ("[rejected]", "cannot lock ref", "failed to update ref", "incorrect old value")

ALONG_MAX = 16
"""Waiting stories one push takes along at most (each costs a merge in the object store)."""

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
    """Pushes this story made (0: found on the branch already, or pushed by another holder)."""
    rebased: bool
    head: str | None = None
    """The branch head this story's push left (its own commit, or a waiting one on top)."""
    along: int = 0
    """Waiting stories this push landed too."""


class Ready(BaseModel):
    """A story in line for the turn with its commit made: what the holder needs to push it.
    Read back from Redis, so every sha is checked to be one before it reaches git."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(max_length=200)
    story_id: str = Field(max_length=200)
    branch: str = Field(max_length=300)
    sha: str = Field(pattern=SHA_PATTERN)
    base: str = Field(pattern=SHA_PATTERN)
    text: str = Field(max_length=64_000)
    recheck: bool
    author_name: str = Field(max_length=200)
    author_email: str = Field(max_length=300)

    @classmethod
    def decode(cls, raw: str) -> Ready | None:
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            return None


class Turn(Protocol):
    """The run branch's landing turn: held while one story fetches, merges and pushes, so
    stories that finish together land one after another instead of racing (and rebasing
    against) each other. Released while the story's agent resolves a conflict or re-runs
    its checks, which can take minutes."""

    async def acquire(self, ready: str | None = None) -> InLine:
        """Wait for the turn (`head`: what the previous holder pushed, None: unknown); with
        an encoded `Ready`, in line, so that the holder may push it (`landed`)."""
        ...

    async def release(self, pushed: str | None = None) -> None:
        """Hand the turn on, with the head this holder pushed."""
        ...

    async def waiting(self) -> list[Waiting]:
        """The other stories in line, oldest first."""
        ...

    async def landed(self, ticket: str, sha: str) -> None:
        """Tell a waiting story that this holder's push landed it as `sha`."""
        ...


class NoTurn:
    """Landing without a queue (a lone runner, tests): races are still handled by retries."""

    async def acquire(self, ready: str | None = None) -> InLine:
        return InLine()

    async def release(self, pushed: str | None = None) -> None:
        return None

    async def waiting(self) -> list[Waiting]:
        return []

    async def landed(self, ticket: str, sha: str) -> None:
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
    ready = Ready(
        run_id=message.run_id,
        story_id=message.story_id,
        branch=worktree.branch,
        sha=sha,
        base=worktree.base,
        text=text,
        recheck=on_rebased is not None,
        author_name=worktree.identity.name,
        author_email=worktree.identity.email,
    )
    got = await rounds.turn.acquire(ready.model_dump_json())
    if got.landed is not None:
        # another story's push took this one along (its worktree stays on its own commit)
        return Landed(got.landed, 0, True)
    rounds.known_head = got.head
    pushed: str | None = None
    try:
        landed = await _land_in_turn(worktree, message, auth, sha, text, rounds, max_push_attempts)
        pushed = (landed.head or landed.sha) if landed.attempts else None
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
        # Only the first push takes others along: after a refused one they land themselves.
        tip, along = await _take_along(worktree, sha, rounds) if attempt == 1 else (sha, [])
        try:
            await mirror.git(
                ["push", "--quiet", "--no-verify", "origin", f"{tip}:refs/heads/{worktree.branch}"],
                auth=auth,
            )
        except GitError as err:
            push_error = err
        else:
            for ticket, landed_sha in along:
                # unsaid, the waiting story finds its commit on the handed-on head itself
                with contextlib.suppress(Exception):
                    await rounds.turn.landed(ticket, landed_sha)
            return Landed(sha, attempt, rebased, head=tip, along=len(along))
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


async def _take_along(
    worktree: Worktree, sha: str, rounds: _Rounds
) -> tuple[str, list[tuple[str, str]]]:
    """The waiting stories this push can carry, merged one by one on top of `sha`: the new
    tip and (ticket, landed sha) per story taken along."""
    try:
        waiting = await rounds.turn.waiting()
    except Exception:  # Redis trouble: everyone lands in their own turn
        return sha, []
    tip, along = sha, []
    for entry in waiting[:ALONG_MAX]:
        ready = Ready.decode(entry.ready)
        if ready is None or ready.sha == sha:
            continue
        if (ready.run_id, ready.branch) != (worktree.run_id, worktree.branch):
            continue  # not a sibling of this story: never pushed under its run's name
        try:
            landed = await _merged_on(worktree.mirror, tip, ready)
        except GitError:
            continue  # not in this mirror, or odd: its owner lands it
        if landed is not None:
            along.append((entry.ticket, landed[0]))
            tip = landed[0] if landed[1] else tip
    return tip, along


async def _merged_on(mirror: Mirror, tip: str, ready: Ready) -> tuple[str, bool] | None:
    """`ready`'s commit merged onto `tip` (True: the tip moved), or its commit already
    there (False); None when it must
    land in its own turn (it conflicts, or overlaps files changed since its base so that its
    checks must run again, or changes workflows)."""
    # raises unless both commits are here; a base that is not behind the tip is no sibling
    common = (await mirror.git(["merge-base", tip, ready.sha])).strip()
    if common != ready.base:
        return None
    found = await _commit_between(mirror, ready.base, tip, ready.run_id, ready.story_id)
    if found is not None:
        return found, False  # landed before (a duplicate delivery): never twice
    ours = await changed_paths(mirror, ready.base, ready.sha)
    if any(p.casefold().startswith(WORKFLOWS_DIR + "/") for p in ours):
        return None
    if ready.recheck:
        theirs = await changed_paths(mirror, ready.base, tip)
        if set(theirs) & set(ours):
            return None
    merged = await merge(mirror, tip, ready.sha)
    if not merged.clean:
        return None
    identity = Identity(name=ready.author_name, email=ready.author_email)
    return await commit_tree(mirror, merged.tree, tip, ready.text, identity), True


def _lost_race(error: GitError) -> bool:
    """A push refused because the branch moved: non-fast-forward, or a concurrent ref update."""
    return any(sign in str(error) for sign in _RACE_SIGNS)


async def _story_commit(worktree: Worktree, head: str, message: CommitMessage) -> str | None:
    """This story's commit among those that landed since `base`, if any."""
    return await _commit_between(
        worktree.mirror, worktree.base, head, message.run_id, message.story_id
    )


async def _commit_between(
    mirror: Mirror, base: str, head: str, run_id: str, story_id: str
) -> str | None:
    out = await mirror.git(["log", "--format=%H%x00%B%x1e", f"{base}..{head}"])
    for record in out.split("\x1e"):
        sha, _, body = record.strip("\n").partition("\0")
        if sha and is_story_commit(body, run_id, story_id):
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

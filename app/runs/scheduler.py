"""Scheduling decisions over a run (pure): what to dispatch, how to treat a result.

Ready-set admission without level barriers: a story may start as soon as every dependency
has landed; among ready stories the one with the longest remaining path goes first. The
I/O around these decisions (Redis, arq) lives in `app/orchestrator.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.runs.dag import TIER_WEIGHTS, dependency_closure, ready_set, remaining_path_length
from app.runs.run import FailureKind, Run, StoryRecord, now

#: Failures that say something about the story (its retry budget, maybe a stronger model).
STORY_FAILURES: frozenset[str] = frozenset({"execution", "verification", "conflict", "no_change"})
#: Failures of the machinery around it (their own small budget, same model).
INFRA_FAILURES: frozenset[str] = frozenset({"provider", "transport", "infrastructure"})
#: Failures that no retry can fix.
FINAL_FAILURES: frozenset[str] = frozenset({"workflow", "cancelled"})


@dataclass(frozen=True)
class RetryBudget:
    story_retries: int = 2
    infra_retries: int = 2


def admit(run: Run, max_parallel: int, capacity: int | None = None) -> list[str]:
    """Stories to start now: ready ones, critical path first, within the limits."""
    if run.plan is None or run.state != "running":
        return []
    records = run.stories
    landed = {sid for sid, r in records.items() if r.state == "landed"}
    running = {sid for sid, r in records.items() if r.state == "running"}
    excluded = {sid for sid, r in records.items() if r.state in ("failed", "blocked", "cancelled")}
    ready = ready_set(run.plan, landed=landed, running=running, excluded=excluded)
    remaining = remaining_path_length(run.plan, TIER_WEIGHTS)
    order = {s.id: i for i, s in enumerate(run.plan.stories)}
    ready.sort(key=lambda sid: (-remaining[sid], order[sid]))
    slots = max(0, max_parallel - len(running))
    if capacity is not None:
        slots = min(slots, max(0, capacity))
    return ready[:slots]


def mark_dispatched(run: Run, story_ids: list[str]) -> Run:
    stories = dict(run.stories)
    for sid in story_ids:
        record = stories.get(sid, StoryRecord())
        stories[sid] = record.model_copy(
            update={
                "state": "running",
                "attempts": record.attempts + 1,
                "started_at": now(),
                "finished_at": None,
                "failure": None,
                "failure_kind": None,
            }
        )
    return run.model_copy(update={"stories": stories})


@dataclass(frozen=True)
class Decision:
    """What a failed story leads to: a retry (maybe escalated) or giving up."""

    retry: bool
    escalate: bool = False
    blocked: tuple[str, ...] = ()


def on_failure(run: Run, story_id: str, kind: FailureKind, budget: RetryBudget) -> Decision:
    record = run.stories[story_id]
    if kind in STORY_FAILURES and record.story_retries < budget.story_retries:
        return Decision(retry=True, escalate=True)
    if kind in INFRA_FAILURES and record.infra_retries < budget.infra_retries:
        return Decision(retry=True)
    assert run.plan is not None
    return Decision(retry=False, blocked=tuple(dependency_closure(run.plan, story_id)))


def apply_failure(run: Run, story_id: str, kind: FailureKind, decision: Decision) -> Run:
    """Record the decision: back to pending for a retry, else failed plus blocked closure."""
    stories = dict(run.stories)
    record = stories[story_id].model_copy(update={"awaiting_decision": False})
    if decision.retry:
        counter = "story_retries" if kind in STORY_FAILURES else "infra_retries"
        stories[story_id] = record.model_copy(
            update={"state": "pending", counter: getattr(record, counter) + 1}
        )
    else:
        stories[story_id] = record.model_copy(update={"state": "failed"})
        for sid in decision.blocked:
            if stories[sid].state in ("pending",):
                stories[sid] = stories[sid].model_copy(
                    update={"state": "blocked", "failure": f"blocked by {story_id}"}
                )
    return run.model_copy(update={"stories": stories})


def finished(run: Run) -> bool:
    """Nothing runs and nothing can start: time to finalize."""
    if run.plan is None:
        return False
    states = [r.state for r in run.stories.values()]
    if "running" in states:
        return False
    return not admit(run, max_parallel=len(states) or 1)


def cancel(run: Run) -> Run | None:
    """`/baro cancel`: no new dispatch; pending stories cancelled; running ones stop at their
    next step (the runner sees the run state); the branch is kept."""
    if run.terminal:
        return None
    stories = {
        sid: r.model_copy(update={"state": "cancelled"}) if r.state == "pending" else r
        for sid, r in run.stories.items()
    }
    return run.model_copy(update={"state": "cancelled", "stories": stories, "finished_at": now()})


class RetryRefused(ValueError):
    """`/baro retry` cannot apply; the message is shown to the user."""


def reset_for_retry(run: Run, only: tuple[str, ...] = ()) -> Run:
    """`/baro retry [S3 …]`: failed and blocked stories (or the named ones and what they
    block) go back to pending with fresh budgets, on the same branch."""
    if run.plan is None:
        raise RetryRefused("this run has no plan to retry; comment `/baro` to start again")
    if run.state not in ("checkpoint", "failed", "cancelled", "running"):
        raise RetryRefused(f"the run is {run.state}; there is nothing to retry")
    unknown = [sid for sid in only if sid not in run.stories]
    if unknown:
        raise RetryRefused(f"no such story in this plan: {', '.join(unknown)}")
    retryable = {"failed", "blocked", "cancelled"}
    if only:
        targets = set(only)
        for sid in only:
            targets.update(dependency_closure(run.plan, sid))
        targets = {sid for sid in targets if run.stories[sid].state in retryable}
    else:
        targets = {sid for sid, r in run.stories.items() if r.state in retryable}
    if not targets:
        raise RetryRefused("no failed, blocked or cancelled stories to retry")
    stories = dict(run.stories)
    for sid in targets:
        stories[sid] = stories[sid].model_copy(
            update={
                "state": "pending",
                "story_retries": 0,
                "infra_retries": 0,
                "awaiting_decision": False,
                "failure": None,
                "failure_kind": None,
            }
        )
    return run.model_copy(update={"state": "running", "stories": stories, "finished_at": None})

"""Scheduling decisions over a run (pure): what to dispatch, how to treat a result.

Ready-set admission without level barriers: a story may start as soon as every dependency
has landed; among ready stories the one with the longest remaining path goes first. The
I/O around these decisions (Redis, arq) lives in `app/worker/orchestrator.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.dag import TIER_WEIGHTS, dependency_closure, ready_set, remaining_path_length
from app.core.plan import Story
from app.core.run import FailureKind, Run, StoryRecord, now

#: Failures that say something about the story (its retry budget, maybe a stronger model).
STORY_FAILURES: frozenset[str] = frozenset(
    {"execution", "verification", "conflict", "no_change", "refused"}
)
#: Failures of the machinery around it (their own small budget, same model).
INFRA_FAILURES: frozenset[str] = frozenset({"provider", "transport", "infrastructure"})
#: Failures that no retry can fix.
FINAL_FAILURES: frozenset[str] = frozenset({"workflow", "cancelled"})


@dataclass(frozen=True)
class RetryBudget:
    story_retries: int = 2
    infra_retries: int = 2


def working(run: Run) -> int:
    """Stories whose agent is at work: what `max_parallel` and the stories-in-flight cap
    count. A story that is landing (its agent done, its commit being pushed) needs no agent
    slot until a conflict sends it back to its agent (`back_to_work`)."""
    return sum(1 for r in run.stories.values() if r.state == "running" and not r.landing)


def wanting(run: Run) -> int:
    """Landing stories waiting to get an agent slot back."""
    return sum(
        1 for r in run.stories.values() if r.state == "running" and r.landing and r.wants_agent
    )


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
    kept = wanting(run)  # slots kept for landing stories whose agent is needed again
    slots = max(0, max_parallel - working(run) - kept)
    if capacity is not None:
        slots = min(slots, max(0, capacity - kept))
    return ready[:slots]


def mark_dispatched(run: Run, story_ids: list[str]) -> Run:
    stories = dict(run.stories)
    for sid in story_ids:
        record = stories.get(sid, StoryRecord())
        at = now()
        stories[sid] = record.model_copy(
            update={
                "state": "running",
                "attempts": record.attempts + 1,
                "started_at": at,
                "spans": record.started(record.attempts + 1, at),
                "finished_at": None,
                "failure": None,
                "failure_kind": None,
                "previous_failure": _previous_failure(record),
                "landing": False,
                "wants_agent": False,
            }
        )
    return run.model_copy(update={"stories": stories})


def max_parallel_of(run: Run, default: int) -> int:
    """The run's `max_parallel`: the repository's `.github/baro.yml`, else the default."""
    configured = run.repo_config.max_parallel if run.repo_config else None
    return configured or default


def set_landing(
    run: Run, story_id: str, attempt: int, landing: bool, wants_agent: bool = False
) -> Run | None:
    """The attempt's agent is done (landing), needed again (landing, wants_agent) or back at
    work (neither); None when the attempt is no longer the story's running one, or nothing
    changes."""
    record = run.stories.get(story_id)
    if record is None or record.state != "running" or record.attempts != attempt:
        return None
    if (record.landing, record.wants_agent) == (landing, wants_agent):
        return None
    update = {"landing": landing, "wants_agent": wants_agent}
    stories = {**run.stories, story_id: record.model_copy(update=update)}
    return run.model_copy(update={"stories": stories})


def back_to_work(
    run: Run, story_id: str, attempt: int, others: list[RunLoad], global_cap: int, max_parallel: int
) -> Run | None:
    """A landing story's agent is needed again (a conflict): it takes an agent slot back
    only within the limits a dispatch keeps; until then it asks for one (`wants_agent`),
    which keeps the run's next free slot for it. None: nothing changes now."""
    room = working(run) < max_parallel and (
        fair_capacity([*others, RunLoad.of(run)], run.installation_id, global_cap) >= 1
    )
    if room:
        return set_landing(run, story_id, attempt, False)
    return set_landing(run, story_id, attempt, True, wants_agent=True)


def _previous_failure(record: StoryRecord) -> str | None:
    """What the last attempt ran into, handed to the next attempt's agent as evidence."""
    if record.failure is None:
        return record.previous_failure
    tail = "\n".join(record.evidence[-2:])
    kind = f"{record.failure_kind}: " if record.failure_kind else ""
    return f"{kind}{record.failure}" + (f"\n\n{tail}" if tail else "")


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
    if any(r.awaiting_decision for r in run.stories.values()):
        return False  # a reported failure may still be retried
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
    env = run.environment
    if run.state == "failed" and env is not None and env.state == "failed":
        # No story ever started: prepare the environment again, then run the plan.
        again = env.model_copy(
            update={
                "state": "pending",
                "generation": env.generation + 1,
                "error": None,
                "error_kind": None,
                "output_tail": None,
            }
        )
        return run.model_copy(
            update={"state": "running", "environment": again, "failure": None, "finished_at": None}
        )
    retryable = {"failed", "blocked", "cancelled"}
    if only:
        targets = set(only)
        for sid in only:
            targets.update(dependency_closure(run.plan, sid))
        targets = {sid for sid in targets if run.stories[sid].state in retryable}
    else:
        targets = {sid for sid, r in run.stories.items() if r.state in retryable}
    if not targets and not only and _pull_request_missing(run):
        # Everything that could land did, but the PR was never opened (GitHub refused, or
        # the run stalled while finalizing): finish again, which verifies and opens it.
        return run.model_copy(
            update={"state": "running", "finished_at": None, "failure": None, "pr_refusals": 0}
        )
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
    return run.model_copy(
        update={"state": "running", "stories": stories, "finished_at": None, "pr_refusals": 0}
    )


def _pull_request_missing(run: Run) -> bool:
    landed = any(r.state == "landed" for r in run.stories.values())
    return run.state in ("checkpoint", "failed") and landed and run.pr_number is None


def spent_usd(run: Run) -> float:
    """Known spending so far (planning included); unknown prices cannot be counted."""
    total = run.plan_stats.cost_usd or 0.0 if run.plan_stats else 0.0
    return total + sum(r.cost_usd or 0.0 for r in run.stories.values())


def stop_for_budget(run: Run, budget_usd: float) -> Run | None:
    """No new story starts once the run's budget is spent: pending ones are cancelled
    with the reason, running ones finish, and the run ends as a checkpoint."""
    spent = spent_usd(run)
    if run.state != "running" or spent < budget_usd:
        return None
    reason = f"the run's budget of ${budget_usd:.2f} is spent (${spent:.4f})"
    stories = {
        sid: r.model_copy(update={"state": "cancelled", "failure": reason})
        if r.state == "pending"
        else r
        for sid, r in run.stories.items()
    }
    if stories == run.stories and run.failure == reason:
        return None
    return run.model_copy(update={"stories": stories, "failure": reason})


@dataclass(frozen=True)
class RunLoad:
    """What fair share needs of a run: whose it is, whether it executes, its stories in
    flight (`running`: their agents at work, see `working`) and those still to start (read
    for every active run in one step: `RunStore.loads`)."""

    run_id: str
    installation_id: int
    state: str
    running: int
    pending: int = 0

    @classmethod
    def of(cls, run: Run) -> RunLoad:
        pending = sum(1 for r in run.stories.values() if r.state == "pending")
        return cls(run.id, run.installation_id, run.state, working(run), pending)


def fair_capacity(loads: list[RunLoad], installation_id: int, global_cap: int) -> int:
    """Stories this installation may start now: the global cap on stories in flight, split
    evenly among installations with work, so one busy repository cannot starve the rest."""
    busy = {r.installation_id for r in loads if r.state == "running"} | {installation_id}
    share = max(1, global_cap // len(busy))
    mine = sum(r.running for r in loads if r.installation_id == installation_id)
    total = sum(r.running for r in loads)
    return max(0, min(global_cap - total, share - mine))


def add_fix_story(run: Run) -> Run | None:
    """Red verification on the integrated branch: one bounded "fix" story with the failing
    output, after which verification runs again (and the PR opens whatever it says)."""
    if run.plan is None or run.fix_story is not None:
        return None
    red = [v for v in run.verification if not v.passed]
    if not red:
        return None
    number = 1 + max(int(s.id[1:]) for s in run.plan.stories)
    sid = f"S{number}"
    failures = "\n\n".join(
        f"$ {v.command}\n(exit code {v.exit_code})\n{v.output_tail[-1500:]}" for v in red
    )
    story = Story(
        id=sid,
        title="Make the verification pass on the integrated branch",
        description=(
            "Every story landed, but these verification commands fail on the integrated "
            "branch. Find the cause and fix it without undoing what the stories built.\n\n"
            + failures
        ),
        depends_on=[s.id for s in run.plan.stories if run.stories[s.id].state == "landed"],
        writes=["."],
        acceptance=["every verification command passes"],
        tests=[v.command for v in red],
        tier="standard",
    )
    plan = run.plan.model_copy(update={"stories": [*run.plan.stories, story]})
    stories = {**run.stories, sid: StoryRecord()}
    return run.model_copy(
        update={
            "plan": plan,
            "stories": stories,
            "fix_story": sid,
            "state": "running",
            "verification": [],
        }
    )

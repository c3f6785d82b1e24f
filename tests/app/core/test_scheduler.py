from __future__ import annotations

from typing import Any

import pytest

from app.core.plan import Plan
from app.core.run import Run, StoryRecord
from app.core.scheduler import (
    RetryBudget,
    RetryRefused,
    RunLoad,
    admit,
    apply_failure,
    back_to_work,
    cancel,
    fair_capacity,
    finished,
    mark_dispatched,
    on_failure,
    reset_for_retry,
    set_landing,
    spent_usd,
    stop_for_budget,
    wanting,
    working,
)


def story(sid: str, deps: list[str], tier: str = "standard") -> dict[str, Any]:
    return {
        "id": sid,
        "title": f"story {sid}",
        "description": "d",
        "depends_on": deps,
        "writes": [f"{sid}.py"],
        "acceptance": ["a"],
        "tier": tier,
    }


# S1 ─┐
# S2 ─┴─ S3 ── S4 (heavy)
# S5 (light, independent)
PLAN = Plan.model_validate(
    {
        "summary": "s",
        "design_note": "d",
        "stories": [
            story("S1", [], "light"),
            story("S2", []),
            story("S3", ["S1", "S2"]),
            story("S4", ["S3"], "heavy"),
            story("S5", [], "light"),
        ],
    }
)


def make_run(**states: str) -> Run:
    records = {s.id: StoryRecord(state=states.get(s.id, "pending")) for s in PLAN.stories}  # type: ignore[arg-type]
    return Run(
        id="r1",
        delivery_id="d",
        installation_id=1,
        owner="o",
        repo="r",
        issue_number=1,
        issue_title="t",
        requester="alice",
        trigger="label",
        state="running",
        plan=PLAN,
        stories=records,
    )


def test_critical_path_first_within_limits() -> None:
    run = make_run()
    # S2 (2) and S1 (1) both lead to S3+S4 (5); S2's remaining path is longest.
    assert admit(run, max_parallel=10) == ["S2", "S1", "S5"]
    assert admit(run, max_parallel=2) == ["S2", "S1"]
    assert admit(run, max_parallel=10, capacity=1) == ["S2"]


def test_no_level_barrier() -> None:
    run = make_run(S1="landed", S2="landed", S5="running")
    assert admit(run, max_parallel=10) == ["S3"]
    assert admit(make_run(S1="landed", S2="running"), max_parallel=10) == ["S5"]


def test_running_stories_count_against_the_limit() -> None:
    run = make_run(S1="running", S2="running")
    assert admit(run, max_parallel=2) == []
    assert admit(run, max_parallel=3) == ["S5"]


def test_not_running_runs_admit_nothing() -> None:
    run = make_run().model_copy(update={"state": "cancelled"})
    assert admit(run, max_parallel=5) == []


def test_dispatch_counts_attempts() -> None:
    run = mark_dispatched(make_run(), ["S1"])
    assert run.stories["S1"].state == "running"
    assert run.stories["S1"].attempts == 1
    assert run.stories["S1"].started_at is not None


def test_story_failures_retry_then_block_the_closure() -> None:
    budget = RetryBudget(story_retries=1, infra_retries=1)
    run = make_run(S1="running")
    first = on_failure(run, "S1", "verification", budget)
    assert first.retry and first.escalate
    run = apply_failure(run, "S1", "verification", first)
    assert run.stories["S1"].state == "pending"
    assert run.stories["S1"].story_retries == 1
    second = on_failure(run, "S1", "verification", budget)
    assert not second.retry
    assert second.blocked == ("S3", "S4")
    run = apply_failure(run, "S1", "verification", second)
    assert run.stories["S1"].state == "failed"
    assert [run.stories[s].state for s in ("S3", "S4")] == ["blocked", "blocked"]
    assert run.stories["S4"].failure == "blocked by S1"
    # Independent stories go on.
    assert admit(run, max_parallel=10) == ["S2", "S5"]


def test_infrastructure_failures_have_their_own_budget() -> None:
    budget = RetryBudget(story_retries=0, infra_retries=1)
    run = make_run(S5="running")
    decision = on_failure(run, "S5", "provider", budget)
    assert decision.retry and not decision.escalate
    run = apply_failure(run, "S5", "provider", decision)
    assert run.stories["S5"].infra_retries == 1
    assert run.stories["S5"].story_retries == 0
    assert not on_failure(run, "S5", "provider", budget).retry


def test_workflow_failures_are_final() -> None:
    assert not on_failure(make_run(), "S5", "workflow", RetryBudget()).retry


def test_finished_when_nothing_can_run() -> None:
    assert not finished(make_run())
    assert not finished(make_run(S1="landed", S2="landed", S3="landed", S4="running", S5="landed"))
    done = make_run(S1="landed", S2="landed", S3="landed", S4="landed", S5="landed")
    assert finished(done)
    blocked = make_run(S1="failed", S2="landed", S3="blocked", S4="blocked", S5="landed")
    assert finished(blocked)


def test_cancel_keeps_landed_and_running_stories() -> None:
    run = make_run(S1="landed", S2="running")
    cancelled = cancel(run)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert cancelled.stories["S1"].state == "landed"
    assert cancelled.stories["S2"].state == "running"
    assert cancelled.stories["S3"].state == "cancelled"
    assert cancel(cancelled) is None


def test_retry_resets_failed_and_blocked() -> None:
    run = make_run(S1="failed", S2="landed", S3="blocked", S4="blocked", S5="landed")
    run = run.model_copy(update={"state": "checkpoint"})
    again = reset_for_retry(run)
    assert again.state == "running"
    assert {s: r.state for s, r in again.stories.items()} == {
        "S1": "pending",
        "S2": "landed",
        "S3": "pending",
        "S4": "pending",
        "S5": "landed",
    }
    assert admit(again, max_parallel=5) == ["S1"]


def test_retry_named_stories_and_refusals() -> None:
    run = make_run(S1="failed", S2="landed", S3="blocked", S4="blocked", S5="failed")
    run = run.model_copy(update={"state": "checkpoint"})
    only_s5 = reset_for_retry(run, ("S5",))
    assert only_s5.stories["S5"].state == "pending"
    assert only_s5.stories["S1"].state == "failed"
    with pytest.raises(RetryRefused, match="no such story in this plan: S9"):
        reset_for_retry(run, ("S9",))
    with pytest.raises(RetryRefused, match="nothing to retry"):
        reset_for_retry(run.model_copy(update={"state": "planning"}))
    landed = make_run(S1="landed", S2="landed", S3="landed", S4="landed", S5="landed")
    with pytest.raises(RetryRefused, match="no failed"):
        reset_for_retry(landed.model_copy(update={"state": "checkpoint", "pr_number": 7}))


def test_retry_opens_the_pull_request_that_was_never_opened() -> None:
    landed = make_run(S1="landed", S2="landed", S3="landed", S4="landed", S5="landed")
    refused = landed.model_copy(
        update={"state": "failed", "failure": "GitHub refused", "pr_refusals": 3}
    )
    again = reset_for_retry(refused)
    assert (again.state, again.failure, again.pr_refusals) == ("running", None, 0)
    assert again.stories == refused.stories  # nothing to redo: finishing opens the PR
    assert finished(again) and admit(again, max_parallel=5) == []
    with pytest.raises(RetryRefused, match="no failed"):
        reset_for_retry(refused, ("S1",))  # naming landed stories retries nothing


def test_budget_stops_new_stories() -> None:
    run = make_run(S1="landed", S2="running")
    stories = dict(run.stories)
    stories["S1"] = stories["S1"].model_copy(update={"cost_usd": 0.6})
    run = run.model_copy(update={"stories": stories})
    assert spent_usd(run) == pytest.approx(0.6)
    assert stop_for_budget(run, 1.0) is None
    stopped = stop_for_budget(run, 0.5)
    assert stopped is not None
    assert stopped.failure == "the run's budget of $0.50 is spent ($0.6000)"
    assert stopped.stories["S2"].state == "running"  # finishes
    assert stopped.stories["S3"].state == "cancelled"
    assert admit(stopped, max_parallel=10) == []
    assert stop_for_budget(stopped, 0.5) is None


def test_fair_capacity_splits_the_global_cap() -> None:
    busy = RunLoad.of(make_run(S1="running", S2="running", S5="running"))
    other = RunLoad.of(make_run().model_copy(update={"id": "r2", "installation_id": 2}))
    assert (busy.running, busy.installation_id, other.running) == (3, 1, 0)
    # Installation 1 already uses 3 of 4 slots; installation 2 gets its fair half.
    assert fair_capacity([busy, other], installation_id=2, global_cap=4) == 1
    assert fair_capacity([busy, other], installation_id=1, global_cap=4) == 0
    assert fair_capacity([busy], installation_id=1, global_cap=10) == 7
    assert fair_capacity([], installation_id=1, global_cap=4) == 4


def _landing(run: Run, *story_ids: str, wants_agent: bool = False) -> Run:
    stories = dict(run.stories)
    for sid in story_ids:
        update = {"landing": True, "wants_agent": wants_agent, "attempts": 1}
        stories[sid] = stories[sid].model_copy(update=update)
    return run.model_copy(update={"stories": stories})


def test_a_landing_story_holds_no_agent_slot() -> None:
    """S1 and S2 run on a limit of two; S1's agent is done and it is landing: S5 may start
    beside it (S3 still waits for S1 to land), and fair share counts one story in flight."""
    run = _landing(make_run(S1="running", S2="running"), "S1")
    assert working(run) == 1
    assert admit(run, max_parallel=2) == ["S5"]
    assert RunLoad.of(run).running == 1
    assert "S1" not in admit(run, max_parallel=10)  # not dispatched again


def test_a_landing_story_whose_agent_is_needed_again_keeps_the_next_slot() -> None:
    run = _landing(make_run(S1="running", S2="running"), "S1", wants_agent=True)
    assert wanting(run) == 1
    assert admit(run, max_parallel=2) == []  # the free slot is S1's
    assert admit(run, max_parallel=3) == ["S5"]
    assert admit(run, max_parallel=3, capacity=1) == []


def test_landing_marks_only_the_current_attempt() -> None:
    run = mark_dispatched(make_run(), ["S1"])
    marked = set_landing(run, "S1", 1, True)
    assert marked is not None and marked.stories["S1"].landing
    assert set_landing(marked, "S1", 1, True) is None  # nothing changes
    assert set_landing(run, "S1", 2, True) is None  # a stale attempt
    assert set_landing(make_run(S1="landed"), "S1", 0, True) is None
    again = mark_dispatched(marked, ["S1"])  # a retry starts with its agent at work
    assert not again.stories["S1"].landing and not again.stories["S1"].wants_agent


def test_back_to_work_within_the_limits_or_asks_for_the_next_slot() -> None:
    run = _landing(make_run(S1="running", S2="running"), "S1")
    back = back_to_work(run, "S1", 1, [], global_cap=16, max_parallel=2)
    assert back is not None and working(back) == 2 and not back.stories["S1"].landing
    full = _landing(make_run(S1="running", S2="running", S5="running"), "S1")
    asked = back_to_work(full, "S1", 1, [], global_cap=16, max_parallel=2)
    assert asked is not None and asked.stories["S1"].wants_agent and working(asked) == 2
    # the global cap: another installation has three stories at work, this run one (S2)
    others = [RunLoad("r2", 2, "running", 3, 5)]
    roomy = back_to_work(run, "S1", 1, others, global_cap=5, max_parallel=8)
    assert roomy is not None and not roomy.stories["S1"].landing
    capped = back_to_work(run, "S1", 1, others, global_cap=4, max_parallel=8)
    assert capped is not None and capped.stories["S1"].wants_agent  # asks; no room yet

"""The orchestrator's decisions in process: `Orchestrator` as the worker builds it, against a
real Redis and the testbed GitHub, on run records written as planning and the runners leave
them. What starts first and how many, the fair share between installations (and a run held
back going the moment a slot frees), a failed story's retry or the end of its budget, a
checkpoint's draft pull request, and a cancelled run that starts nothing more.
(The e2e tests in tests/e2e keep the wiring through real processes.)"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from arq.worker import Retry

from app.core.plan import Plan
from app.core.routing import RepoConfig, RoutingConfig
from app.core.run import Run, StoryRecord, now
from app.github import LABEL_DONE, LABEL_FAILED, LABEL_RUNNING
from app.worker.main import handle_trigger, refresh_run
from testbed.github.gitops import branch_ahead
from testbed.github.state import Issue, Repo
from tests.app.worker.conftest import OWNER, Bench, Hub, open_bench

NO_REVIEW = RepoConfig(review=False)
"""The runs here go from their stories straight to the pull request."""


def story(sid: str, deps: tuple[str, ...] = (), tier: str = "light") -> dict[str, Any]:
    return {
        "id": sid,
        "title": f"Story {sid}",
        "description": "d",
        "depends_on": list(deps),
        "writes": [f"{sid.lower()}.txt"],
        "acceptance": ["a"],
        "tests": [f"test -f {sid.lower()}.txt"],
        "tier": tier,
    }


async def new_run(
    bench: Bench,
    repo: Repo,
    issue: Issue,
    stories: list[dict[str, Any]],
    *,
    state: str = "ready",
    records: dict[str, StoryRecord] | None = None,
    installation_id: int | None = None,
    owner: str = OWNER,
) -> Run:
    """A planned run as planning leaves it (its branch made), and the issue's active run."""
    plan = Plan.model_validate({"summary": "s", "design_note": "d", "stories": stories})
    run_id = f"r{uuid.uuid4().hex[:11]}"
    branch = f"baro/issue-{issue.number}-{run_id}"
    branch_ahead(repo.git_dir, branch)
    run = Run(
        id=run_id,
        delivery_id=str(uuid.uuid4()),
        installation_id=installation_id or bench.hub.installation.id,
        owner=owner,
        repo=repo.name,
        issue_number=issue.number,
        issue_title=issue.title,
        requester="maintainer",
        trigger="label",
        state=state,  # type: ignore[arg-type]
        default_branch="main",
        repo_config=NO_REVIEW,
        plan=plan,
        branch=branch,
        stories={s["id"]: (records or {}).get(s["id"], StoryRecord()) for s in stories},
    )
    await bench.services.store.create(run)
    await bench.services.store.claim_issue(run.issue_key, run.id)
    return run


async def running_run(
    bench: Bench, stories: list[dict[str, Any]], records: dict[str, StoryRecord]
) -> tuple[Repo, Issue, Run]:
    """A new repository and issue whose run is executing, its stories as `records` say."""
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    run = await new_run(bench, repo, issue, stories, state="running", records=records)
    return repo, issue, run


def states(run: Run) -> dict[str, str]:
    return {sid: r.state for sid, r in run.stories.items()}


async def event_kinds(bench: Bench, run_id: str) -> list[str]:
    return [e["kind"] for e in await bench.services.store.events(run_id)]


@pytest.fixture
async def narrow(hub: Hub, redis_url: str) -> AsyncIterator[Bench]:
    """A worker whose runs take two stories at a time, and two stories in flight overall."""
    bench = await open_bench(hub, redis_url, max_parallel=2, max_stories_in_flight=2)
    yield bench
    await bench.services.close()
    await bench.redis.aclose(close_connection_pool=True)


# --- admission -----------------------------------------------------------------------------------


async def test_start_dispatches_the_critical_path_first_within_the_run_s_limit(
    narrow: Bench,
) -> None:
    repo = narrow.new_repo()
    issue = narrow.new_issue(repo)
    # S1 → S3 → S4 is the long chain; S2 and S5 stand alone.
    plan = [story("S2"), story("S5"), story("S1"), story("S3", ("S1",)), story("S4", ("S3",))]
    run = await new_run(narrow, repo, issue, plan)
    orchestrator = narrow.services.orchestrator

    assert await orchestrator.start(run.id) == "running"
    started = await narrow.run(run.id)
    assert started.state == "running"
    assert [sid for sid, s in states(started).items() if s == "running"] == ["S2", "S1"]
    assert all(started.stories[sid].attempts == 1 for sid in ("S1", "S2"))
    assert await narrow.runner_jobs() == [f"story:{run.id}:S1:1", f"story:{run.id}:S2:1"]
    for sid in ("S1", "S2"):
        assert await narrow.services.store.lease_holder(run.id, sid) == "queued:1"
    assert LABEL_RUNNING in narrow.state.labels(repo, issue.number)
    (comment,) = narrow.tracking_comments(repo, issue.number)
    assert "**S1**" in comment.body and "**S4**" in comment.body

    # A repeated start or dispatch (arq re-runs jobs) starts nothing twice.
    assert await orchestrator.start(run.id) == "running"
    assert await orchestrator.dispatch(run.id) == []
    assert len(await narrow.runner_jobs()) == 2


async def test_fair_share_holds_a_run_back_until_a_slot_frees(narrow: Bench) -> None:
    """Two installations with work share two slots one each; when the other one's story
    lands, the run held back gets the freed slot at once (not on the recovery tick)."""
    hub = narrow.hub
    other_owner = f"other-{uuid.uuid4().hex[:6]}"
    other = hub.state.create_installation(hub.app, other_owner)
    theirs = hub.state.create_repo(
        other_owner, "busy", {"README.md": "# busy\n"}, installation=other
    )
    their_issue = narrow.new_issue(theirs)
    busy = await new_run(
        narrow,
        theirs,
        their_issue,
        [story("S1")],
        state="running",
        records={"S1": StoryRecord(state="running", attempts=1)},
        installation_id=other.id,
        owner=other_owner,
    )
    repo = narrow.new_repo()
    issue = narrow.new_issue(repo)
    mine = await new_run(narrow, repo, issue, [story("S1"), story("S2"), story("S3")])
    orchestrator = narrow.services.orchestrator

    await orchestrator.start(mine.id)
    assert list(states(await narrow.run(mine.id)).values()).count("running") == 1

    def landed(r: Run) -> Run:
        record = r.stories["S1"].model_copy(update={"state": "landed", "sha": "0" * 40})
        return r.model_copy(update={"stories": {"S1": record}})

    await narrow.services.store.update(busy.id, landed)  # as the runner records it
    await orchestrator.story_finished(busy.id, "S1")
    after = await narrow.run(mine.id)
    assert list(states(after).values()).count("running") == 2
    assert (await narrow.run(busy.id)).state == "done"
    mine_jobs = [j for j in await narrow.runner_jobs() if j.startswith(f"story:{mine.id}:")]
    assert len(mine_jobs) == 2


async def test_a_freed_slot_wakes_the_waiting_run_whose_installation_has_room(
    narrow: Bench,
) -> None:
    """Runs held back wait in line; a freed slot goes to the first one whose installation is
    below its share, and the others keep their places (they are not all dispatched again)."""
    hub = narrow.hub
    other_owner = f"other-{uuid.uuid4().hex[:6]}"
    other = hub.state.create_installation(hub.app, other_owner)
    theirs = hub.state.create_repo(
        other_owner, "busy", {"README.md": "# busy\n"}, installation=other
    )

    async def their_run(records: dict[str, StoryRecord], state: str = "running") -> Run:
        return await new_run(
            narrow,
            theirs,
            narrow.new_issue(theirs),
            [story(sid) for sid in records],
            state=state,
            records=records,
            installation_id=other.id,
            owner=other_owner,
        )

    orchestrator = narrow.services.orchestrator
    busy = await their_run({"S1": StoryRecord(state="running", attempts=1)})
    repo = narrow.new_repo()
    mine = await new_run(narrow, repo, narrow.new_issue(repo), [story("S1"), story("S2")])
    await orchestrator.start(mine.id)  # one slot each: one of its two stories waits
    second = await their_run({"S1": StoryRecord()})
    assert await orchestrator.dispatch(second.id) == []  # its installation's one slot is used
    waiting = [r for r in await narrow.services.store.waiting() if r in (mine.id, second.id)]
    assert waiting == [mine.id, second.id]

    def landed(r: Run) -> Run:
        record = r.stories["S1"].model_copy(update={"state": "landed", "sha": "0" * 40})
        return r.model_copy(update={"stories": {"S1": record}})

    await narrow.services.store.update(busy.id, landed)
    await orchestrator.story_finished(busy.id, "S1")
    assert states(await narrow.run(second.id)) == {"S1": "running"}
    assert list(states(await narrow.run(mine.id)).values()).count("running") == 1
    waiting = [r for r in await narrow.services.store.waiting() if r in (mine.id, second.id)]
    assert waiting == [mine.id]


async def test_slots_freed_together_are_all_handed_on(narrow: Bench) -> None:
    """Stories ending at once each ask for an admission pass; a pass already running takes
    the request as one more round, so no freed slot is left unused."""
    hub = narrow.hub
    other_owner = f"other-{uuid.uuid4().hex[:6]}"
    other = hub.state.create_installation(hub.app, other_owner)
    theirs = hub.state.create_repo(
        other_owner, "busy", {"README.md": "# busy\n"}, installation=other
    )
    running = StoryRecord(state="running", attempts=1)
    busy = await new_run(
        narrow,
        theirs,
        narrow.new_issue(theirs),
        [story("S1"), story("S2")],
        state="running",
        records={"S1": running, "S2": running},
        installation_id=other.id,
        owner=other_owner,
    )
    repo = narrow.new_repo()
    mine = await new_run(narrow, repo, narrow.new_issue(repo), [story("S1"), story("S2")])
    orchestrator = narrow.services.orchestrator
    await orchestrator.start(mine.id)
    assert "running" not in states(await narrow.run(mine.id)).values()  # both slots taken

    def landed(r: Run) -> Run:
        done = {
            sid: s.model_copy(update={"state": "landed", "sha": "0" * 40})
            for sid, s in r.stories.items()
        }
        return r.model_copy(update={"stories": done})

    await narrow.services.store.update(busy.id, landed)
    await asyncio.gather(*(orchestrator.story_finished(busy.id, sid) for sid in ("S1", "S2")))
    assert (await narrow.run(busy.id)).state == "done"
    assert states(await narrow.run(mine.id)) == {"S1": "running", "S2": "running"}
    assert mine.id not in await narrow.services.store.waiting()


async def test_a_story_being_dispatched_is_not_taken_for_lost(bench: Bench) -> None:
    """A story is marked running a moment before its queued lease is set; the reaper leaves
    it alone then. Lost for longer, it is retried, and the new attempt's queued lease
    replaces the first one's (which would otherwise keep the new job waiting for 30 min)."""
    just_now = StoryRecord(state="running", attempts=1, started_at=now())
    _repo, _issue, run = await running_run(bench, [story("S1")], {"S1": just_now})
    recovery, store = bench.services.recovery, bench.services.store

    assert await recovery.reap_runs() == []
    assert states(await bench.run(run.id)) == {"S1": "running"}
    assert "story_failed" not in await event_kinds(bench, run.id)

    def lost(r: Run) -> Run:
        old = r.stories["S1"].model_copy(update={"started_at": now() - timedelta(minutes=1)})
        return r.model_copy(update={"stories": {"S1": old}})

    await store.update(run.id, lost)
    assert f"{run.id}:S1" in await recovery.reap_runs()
    retried = await bench.run(run.id)
    assert (retried.stories["S1"].state, retried.stories["S1"].attempts) == ("running", 2)
    assert await store.lease_holder(run.id, "S1") == "queued:2"
    # The first dispatch's late lease write changes nothing; a runner's lease is never taken.
    assert not await store.queue_lease(run.id, "S1", 1, 60)
    assert await store.claim_lease(run.id, "S1", "queued:2", "runner-a", 60)
    assert not await store.queue_lease(run.id, "S1", 3, 60)
    assert await store.lease_holder(run.id, "S1") == "runner-a"
    assert await store.queue_lease(run.id, "S9", 1, 60)
    assert await store.queue_lease(run.id, "S9", 2, 60)  # over an earlier attempt's
    assert await store.lease_holder(run.id, "S9") == "queued:2"


# --- GitHub writes ---------------------------------------------------------------------------


@pytest.fixture
async def spaced(hub: Hub, redis_url: str) -> AsyncIterator[Bench]:
    """A worker whose writes are spaced as in production (shorter) and whose comment edits
    are debounced."""
    bench = await open_bench(hub, redis_url, github_write_spacing=0.3, comment_debounce_seconds=1)
    yield bench
    await bench.services.close()
    await bench.redis.aclose(close_connection_pool=True)


async def test_every_github_client_shares_the_process_tls_context(bench: Bench) -> None:
    """githubkit makes an HTTP client per session: the CA bundle is loaded once, not each."""
    gateway = bench.services.gateway
    client = gateway.installation(bench.hub.installation.id)
    shared = gateway.app.config.ssl_verify
    assert isinstance(shared, ssl.SSLContext) and client.gh.config.ssl_verify is shared
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    async with client.session() as gh:  # and the client still talks to GitHub
        assert (await gh.issue(OWNER, repo.name, issue.number)).title == issue.title


async def test_a_progress_edit_yields_to_a_write_backlog_and_comes_back_later(
    spaced: Bench,
) -> None:
    """The tracking comment's edit does not queue behind the installation's other writes
    (which would hold a scheduling job): it is put off to a refresh, which writes it once
    the backlog is gone."""
    repo, issue, run = await running_run(spaced, [story("S1")], {"S1": StoryRecord()})
    orchestrator = spaced.services.orchestrator
    gh = spaced.services.gateway.installation(run.installation_id)
    others = [spaced.new_issue(repo, f"Other {i}") for i in range(4)]
    backlog = [
        asyncio.create_task(gh.add_labels(OWNER, repo.name, o.number, ["busy"])) for o in others
    ]
    await asyncio.sleep(0.05)
    assert gh.writer.backlog() > 0.3

    put_off = await orchestrator.render(run)
    assert put_off is not None and put_off > 1
    assert spaced.tracking_comments(repo, issue.number) == []
    assert f"refresh:{run.id}" in await spaced.queued()
    with pytest.raises(Retry):  # the refresh itself, still behind the backlog, comes back
        await refresh_run(spaced.ctx, run.id, False)

    await asyncio.gather(*backlog)
    await asyncio.sleep(0.7)  # the bucket refills
    assert gh.writer.backlog() == 0
    assert await refresh_run(spaced.ctx, run.id, False) == "refreshed"
    (comment,) = spaced.tracking_comments(repo, issue.number)
    assert "**S1**" in comment.body
    assert all("busy" in spaced.state.labels(repo, o.number) for o in others)


# --- a failed story -------------------------------------------------------------------------


def failed(kind: str, **counters: int) -> StoryRecord:
    """A red attempt as the runner records it, before the orchestrator decided."""
    return StoryRecord(
        state="failed",
        attempts=1 + sum(counters.values()),
        awaiting_decision=True,
        failure_kind=kind,  # type: ignore[arg-type]
        failure=f"{kind} went wrong",
        **counters,
    )


@pytest.mark.parametrize(
    ("kind", "counter", "tier"),
    [("verification", "story_retries", "standard"), ("infrastructure", "infra_retries", "light")],
)
async def test_a_failure_within_its_budget_is_dispatched_again(
    bench: Bench, kind: str, counter: str, tier: str
) -> None:
    """A story failure is retried one tier up (the runner routes on `story_retries`); a
    failure of the machinery around it is retried on the same tier."""
    _, _, run = await running_run(bench, [story("S1"), story("S2", ("S1",))], {"S1": failed(kind)})

    assert await bench.services.orchestrator.story_finished(run.id, "S1") == "running"
    after = await bench.run(run.id)
    s1 = after.stories["S1"]
    assert (s1.state, s1.attempts, s1.awaiting_decision) == ("running", 2, False)
    assert getattr(s1, counter) == 1
    other = "infra_retries" if counter == "story_retries" else "story_retries"
    assert getattr(s1, other) == 0  # each kind of failure spends its own budget
    assert s1.previous_failure == f"{kind}: {kind} went wrong"  # told to the next attempt
    routing = RoutingConfig(planner="p", light="l", standard="s", heavy="h")
    assert routing.tier_for_story("light", attempt=s1.story_retries + 1) == tier
    assert after.stories["S2"].state == "pending"
    assert await bench.runner_jobs() == [f"story:{run.id}:S1:2"]
    assert "retry" in await event_kinds(bench, run.id)

    # The job delivered again decides nothing twice.
    assert await bench.services.orchestrator.story_finished(run.id, "S1") == "running"
    assert (await bench.run(run.id)).stories["S1"].attempts == 2


async def test_a_spent_budget_fails_the_story_blocks_its_dependents_and_checkpoints(
    bench: Bench,
) -> None:
    """S1 landed, S2 spent its retries, S3 needed S2: a draft PR of what landed (`Refs`, not
    `Closes`), the failed label, and the final comment saying checkpoint."""
    repo, issue, run = await running_run(
        bench,
        [story("S1"), story("S2"), story("S3", ("S2",))],
        {
            "S1": StoryRecord(state="landed", attempts=1, sha="1" * 40),
            "S2": failed("verification", story_retries=2),
        },
    )

    assert await bench.services.orchestrator.story_finished(run.id, "S2") == "failed"
    after = await bench.run(run.id)
    assert states(after) == {"S1": "landed", "S2": "failed", "S3": "blocked"}
    assert after.stories["S3"].failure == "blocked by S2"
    assert after.stories["S2"].awaiting_decision is False
    assert after.state == "checkpoint"
    assert await bench.runner_jobs() == []
    (pull,) = bench.state.pulls(repo)
    assert (pull.head_ref, pull.draft, after.pr_number) == (run.branch, True, pull.number)
    assert (pull.issue.body or "").startswith(f"Refs #{issue.number}\n")
    assert LABEL_FAILED in bench.state.labels(repo, issue.number)
    (comment,) = bench.tracking_comments(repo, issue.number)
    assert "### ⚠️ Checkpoint — 1/3 stories landed" in comment.body
    kinds = await event_kinds(bench, run.id)
    assert kinds.index("gave_up") < kinds.index("finalizing") < kinds.index("finished")


async def test_a_final_comment_github_refuses_still_leaves_the_label_and_review_request(
    bench: Bench,
) -> None:
    """The result goes out first (the final comment); when GitHub refuses that edit, the
    review request and the state label still follow, and the run stays concluded."""
    landed = StoryRecord(state="landed", attempts=1, sha="1" * 40)
    repo = bench.new_repo()
    issue = bench.new_issue(repo)
    run = await new_run(
        bench,
        repo,
        issue,
        [story("S1"), story("S2")],
        state="finalizing",
        records={"S1": landed, "S2": landed},
    )
    refusal = bench.state.faults.add(
        method="POST",
        path=rf"^/repos/{OWNER}/{repo.name}/issues/{issue.number}/comments$",
        status=403,
        body={"message": "Resource not accessible by integration"},
        times=None,
    )
    try:
        assert await bench.services.orchestrator.open_pull_request(run.id) == "done"
    finally:
        bench.state.faults.remove(refusal)
    after = await bench.run(run.id)
    assert after.state == "done" and after.pr_number is not None
    assert refusal.hits >= 1
    assert LABEL_DONE in bench.state.labels(repo, issue.number)
    pull = bench.state.get_pull(repo, after.pr_number)
    assert [u.login for u in pull.requested_reviewers] == [run.requester]


# --- cancellation ---------------------------------------------------------------------------


async def test_a_cancelled_run_starts_nothing_and_its_stopped_story_is_not_retried(
    bench: Bench,
) -> None:
    repo, issue, run = await running_run(
        bench,
        [story("S1"), story("S2", ("S1",)), story("S3")],
        {"S1": StoryRecord(state="running", attempts=1)},
    )
    cancel = bench.comment(repo, issue.number, "/baro cancel")
    assert await handle_trigger(bench.ctx, cancel.model_dump(mode="json")) == "cancelled"
    assert states(await bench.run(run.id)) == {
        "S1": "running",
        "S2": "cancelled",
        "S3": "cancelled",
    }
    orchestrator = bench.services.orchestrator
    assert await orchestrator.dispatch(run.id) == []

    # The runner stops S1 at its next step and reports it; a cancellation is never retried.
    def stopped(r: Run) -> Run:
        record = failed("cancelled").model_copy(update={"attempts": 1})
        return r.model_copy(update={"stories": {**r.stories, "S1": record}})

    await bench.services.store.update(run.id, stopped)
    assert await orchestrator.story_finished(run.id, "S1") == "failed"
    after = await bench.run(run.id)
    assert after.state == "cancelled"
    assert (after.stories["S1"].attempts, after.stories["S1"].awaiting_decision) == (1, False)
    assert await bench.runner_jobs() == []
    assert bench.state.pulls(repo) == []

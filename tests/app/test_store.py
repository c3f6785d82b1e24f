"""RunStore against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.core.run import Run, StoryRecord, run_id_for
from app.core.scheduler import RunLoad
from app.landing_turn import InLine
from app.store import RunNotFound, RunStore
from testbed.waiting import wait_for


def make_run(delivery: str = "d-1", number: int = 7) -> Run:
    return Run(
        id=run_id_for(delivery),
        delivery_id=delivery,
        installation_id=1,
        owner="Octo",
        repo="Demo",
        issue_number=number,
        issue_title="Add a thing",
        requester="alice",
        trigger="label",
    )


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RunStore]:
    redis = Redis.from_url(redis_url)
    yield RunStore(redis)
    await redis.aclose()


async def test_create_is_idempotent(store: RunStore) -> None:
    run, created = await store.create(make_run())
    assert created
    again, created_again = await store.create(make_run())
    assert not created_again
    assert again == run
    assert [e["kind"] for e in await store.events(run.id)] == ["created"]


async def test_run_id_is_stable_per_delivery() -> None:
    assert run_id_for("abc") == run_id_for("abc") != run_id_for("abd")


async def test_update_is_compare_and_set(store: RunStore) -> None:
    run, _ = await store.create(make_run())

    def bump(r: Run) -> Run:
        return r.model_copy(update={"instructions": r.instructions + "x"})

    await asyncio.gather(*(store.update(run.id, bump) for _ in range(20)))
    final = await store.get(run.id)
    assert final.instructions == "x" * 20
    assert final.version == 20


async def test_update_none_is_no_change(store: RunStore) -> None:
    run, _ = await store.create(make_run())
    same = await store.update(run.id, lambda r: None)
    assert same.version == 0


async def test_missing_run(store: RunStore) -> None:
    with pytest.raises(RunNotFound):
        await store.get("r-nope")
    assert await store.find("r-nope") is None
    with pytest.raises(RunNotFound):
        await store.update("r-nope", lambda r: r)


async def test_one_active_run_per_issue(store: RunStore) -> None:
    first, _ = await store.create(make_run("d-1"))
    second, _ = await store.create(make_run("d-2"))
    assert await store.claim_issue(first.issue_key, first.id) == first.id
    assert await store.claim_issue(first.issue_key, first.id) == first.id
    assert await store.claim_issue(second.issue_key, second.id) == first.id
    await store.update(first.id, lambda r: r.model_copy(update={"state": "done"}))
    assert await store.claim_issue(second.issue_key, second.id) == second.id
    active = await store.active_run(second.issue_key)
    assert active is not None and active.id == second.id


async def test_one_run_per_branch_across_issue_and_pull_request(store: RunStore) -> None:
    issue_run, _ = await store.create(make_run("d-b1"))
    follow_up, _ = await store.create(make_run("d-b2"))
    branch = "baro/issue-1-x"
    assert await store.claim_branch("Octo", "Demo", branch, issue_run.id) == issue_run.id
    assert await store.claim_branch("octo", "demo", branch, follow_up.id) == issue_run.id
    assert await store.claim_branch("octo", "demo", "baro/other", follow_up.id) == follow_up.id
    assert await store.claim_branch("octo", "elsewhere", branch, follow_up.id) == follow_up.id
    await store.update(issue_run.id, lambda r: r.model_copy(update={"state": "checkpoint"}))
    assert await store.claim_branch("octo", "demo", branch, follow_up.id) == follow_up.id
    assert await store.claim_branch("octo", "demo", branch, issue_run.id) == follow_up.id


async def test_claim_survives_a_vanished_holder(store: RunStore) -> None:
    run = make_run("d-3")
    assert await store.claim_issue(run.issue_key, "r-ghost") == "r-ghost"
    assert await store.claim_issue(run.issue_key, run.id) == run.id


async def test_concurrent_claims_have_one_winner(store: RunStore) -> None:
    runs = [make_run(f"d-{i}") for i in range(10)]
    for run in runs:
        await store.create(run)
    holders = await asyncio.gather(*(store.claim_issue(r.issue_key, r.id) for r in runs))
    assert len(set(holders)) == 1


async def test_leases_belong_to_their_holder(store: RunStore) -> None:
    assert await store.acquire_lease("r1", "S1", "runner-a", ttl=5)
    assert not await store.acquire_lease("r1", "S1", "runner-b", ttl=5)
    assert await store.lease_holder("r1", "S1") == "runner-a"
    assert not await store.renew_lease("r1", "S1", "runner-b", ttl=5)
    assert await store.renew_lease("r1", "S1", "runner-a", ttl=5)
    await store.release_lease("r1", "S1", "runner-b")  # not theirs: no effect
    assert await store.lease_holder("r1", "S1") == "runner-a"
    await store.release_lease("r1", "S1", "runner-a")
    assert await store.lease_holder("r1", "S1") is None


async def test_lease_expires(store: RunStore) -> None:
    assert await store.acquire_lease("r1", "S2", "runner-a", ttl=0.05)
    await asyncio.sleep(0.1)
    assert not await store.renew_lease("r1", "S2", "runner-a", ttl=5)
    assert await store.acquire_lease("r1", "S2", "runner-b", ttl=5)


async def test_the_render_window_grows_with_each_edit(store: RunStore) -> None:
    assert await store.open_render_window("r1", 0.05, 1.0) == 0.05
    assert await store.open_render_window("r1", 0.05, 1.0) is None  # inside the window
    assert 0 < await store.render_wait("r1") <= 0.05
    await asyncio.sleep(0.07)
    assert await store.render_wait("r1") == 0
    assert await store.open_render_window("r1", 0.05, 1.0) == 0.1
    assert await store.open_render_window("r2", 0.05, 1.0) == 0.05  # per run


async def test_loads_are_kept_with_every_active_run(store: RunStore) -> None:
    busy, _ = await store.create(make_run("d-load-1", 1))
    quiet, _ = await store.create(make_run("d-load-2", 2).model_copy(update={"installation_id": 9}))
    done, _ = await store.create(make_run("d-load-3", 3))

    def running(r: Run) -> Run:
        stories = {"S1": StoryRecord(state="running"), "S2": StoryRecord(), "S3": StoryRecord()}
        return r.model_copy(update={"state": "running", "stories": stories})

    busy = await store.update(busy.id, running)
    await store.update(done.id, lambda r: r.model_copy(update={"state": "done"}))
    loads = {load.run_id: load for load in await store.loads()}
    assert loads[busy.id] == RunLoad(busy.id, 1, "running", 1, 2) == RunLoad.of(busy)
    assert loads[quiet.id] == RunLoad(quiet.id, 9, "queued", 0, 0)
    assert done.id not in loads  # a terminal run leaves the active set

    # A run stored before loads were kept (an upgrade): read once, its load filled in.
    await store.redis.hdel("baro:runs:loads", busy.id)  # type: ignore[misc]
    assert RunLoad.of(busy) in await store.loads()
    assert await store.redis.hget("baro:runs:loads", busy.id) == b"1:running:1:2"  # type: ignore[misc]


async def test_runs_wait_for_capacity_in_the_order_they_were_held_back(store: RunStore) -> None:
    for run_id in ("r-later", "r-first"):
        await store.stop_waiting(run_id)
    await store.wait_for_capacity("r-first")
    await store.wait_for_capacity("r-later")
    await store.wait_for_capacity("r-first")  # held back again: keeps its place
    mine = [r for r in await store.waiting() if r in ("r-first", "r-later")]
    assert mine == ["r-first", "r-later"]
    await store.stop_waiting("r-first")
    assert "r-first" not in await store.waiting()
    await store.stop_waiting("r-later")


async def test_the_landing_turn_hands_on_the_created_then_the_pushed_head(
    store: RunStore,
) -> None:
    """The first holder learns the head the branch was created at; each release wakes one
    waiter, which learns what the holder pushed."""
    first = store.landing_turn("r1")
    assert (await first.acquire()).head is None  # nothing known yet
    await first.release()
    await store.branch_created("r1", "b" * 40)
    assert (await first.acquire()).head == "b" * 40
    second = store.landing_turn("r1")
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await first.release("c" * 40)
    assert (await asyncio.wait_for(waiting, 10)).head == "c" * 40
    await second.release()


async def test_a_story_in_line_hears_that_the_holder_landed_it(store: RunStore) -> None:
    holder = store.landing_turn("r1")
    await holder.acquire()
    waiter = store.landing_turn("r1")
    waiting = asyncio.create_task(waiter.acquire(ready='{"story": "S2"}'))
    line = await wait_for(holder.waiting, 10, "the story in line")
    assert [w.ready for w in line] == ['{"story": "S2"}']
    await holder.landed(line[0].ticket, "d" * 40)
    assert await asyncio.wait_for(waiting, 10) == InLine(landed="d" * 40)
    assert await holder.waiting() == []
    await holder.release("d" * 40)


async def test_a_story_that_stops_waiting_leaves_the_line(store: RunStore) -> None:
    holder = store.landing_turn("r1")
    await holder.acquire()
    waiting = asyncio.create_task(store.landing_turn("r1").acquire(ready="{}"))
    await wait_for(holder.waiting, 10, "the story in line")
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert await holder.waiting() == []
    await holder.release()


async def test_a_landing_story_leaves_the_load_and_takes_its_slot_back(store: RunStore) -> None:
    """Marking an attempt landing and back at work goes through the same atomic update
    that keeps the load table, so fair share sees agents at work only."""
    run, _ = await store.create(make_run("d-landing", 11))

    def running(r: Run) -> Run:
        stories = {
            "S1": StoryRecord(state="running", attempts=1),
            "S2": StoryRecord(state="running", attempts=1),
        }
        return r.model_copy(update={"state": "running", "stories": stories})

    await store.update(run.id, running)
    assert await store.set_landing(run.id, "S1", 2) is False  # a stale attempt
    assert await store.set_landing(run.id, "S1", 1) is True
    loads = {load.run_id: load for load in await store.loads()}
    assert loads[run.id].running == 1
    # no room (a cap of one, taken by S2): it asks and keeps the next slot
    assert await store.back_to_work(run.id, "S1", 1, global_cap=1, default_parallel=8) is False
    assert (await store.get(run.id)).stories["S1"].wants_agent
    assert await store.back_to_work(run.id, "S1", 1, global_cap=2, default_parallel=8) is True
    record = (await store.get(run.id)).stories["S1"]
    assert not record.landing and not record.wants_agent
    assert {load.run_id: load for load in await store.loads()}[run.id].running == 2

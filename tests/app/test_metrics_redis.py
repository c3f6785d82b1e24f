"""The metrics recorder and renderer against a real Redis (and a Redis that goes away)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.plan import Plan
from app.core.run import Run, StoryRecord
from app.core.scheduler import mark_dispatched
from app.keys import RUNNERS
from app.llm.types import Usage
from app.metrics import Metrics, read_snapshot, render
from app.store import RunStore
from runner.presence import RunnerPresence
from tests.conftest import RedisServer

PLAN = Plan.model_validate(
    {
        "summary": "s",
        "design_note": "d",
        "stories": [
            {
                "id": "S1",
                "title": "one",
                "description": "d",
                "depends_on": [],
                "writes": ["a.py"],
                "acceptance": ["a"],
                "tier": "standard",
            }
        ],
    }
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    snapshot = await read_snapshot(metrics, RunStore(metrics.redis, metrics).active_runs)
    return samples(render(snapshot).decode())


async def test_recorded_facts_come_back_from_redis(redis: Redis) -> None:
    metrics = Metrics(redis)
    await metrics.delivery("issues", "queued")
    await metrics.delivery("issues", "queued")
    await metrics.delivery("unverified", "bad_signature")
    usage = Usage(uncached_input=100, cache_read=400, cache_write=50, output=30)
    await metrics.model_call("flash", usage, Decimal("0.0125"))
    await metrics.model_call("flash", usage, None)  # unknown price: not added to dollars
    await metrics.story_started("light", 0.3)
    await metrics.story_started("light", 45.0)
    hook = metrics.response_hook(77)
    await hook(httpx.Response(200, headers={"x-ratelimit-remaining": "4999"}))
    await hook(
        httpx.Response(
            200, headers={"x-ratelimit-remaining": "4870", "x-ratelimit-resource": "core"}
        )
    )
    await hook(
        httpx.Response(
            200, headers={"x-ratelimit-remaining": "4990", "x-ratelimit-resource": "graphql"}
        )
    )
    await hook(httpx.Response(200))  # no rate-limit headers: nothing recorded

    got = await scrape(metrics)
    assert got[("baro_webhook_deliveries_total", (("event", "issues"), ("outcome", "queued")))] == 2
    flash = (("model", "flash"),)
    assert got[("baro_model_calls_total", flash)] == 2
    assert got[("baro_model_tokens_total", (("kind", "input"), *flash))] == 300
    assert got[("baro_model_tokens_total", (("kind", "cached"), *flash))] == 800
    assert got[("baro_model_tokens_total", (("kind", "output"), *flash))] == 60
    assert got[("baro_model_cost_dollars_total", flash)] == pytest.approx(0.0125)
    assert got[("baro_model_calls_unpriced_total", flash)] == 1
    light = (("tier", "light"),)
    assert got[("baro_story_queue_wait_seconds_bucket", (("le", "0.5"), *light))] == 1
    assert got[("baro_story_queue_wait_seconds_bucket", (("le", "30.0"), *light))] == 1
    assert got[("baro_story_queue_wait_seconds_bucket", (("le", "60.0"), *light))] == 2
    assert got[("baro_story_queue_wait_seconds_count", light)] == 2
    assert got[("baro_story_queue_wait_seconds_sum", light)] == pytest.approx(45.3)
    rate = "baro_github_rate_limit_remaining"
    assert got[(rate, (("installation", "77"), ("resource", "core")))] == 4870
    assert got[(rate, (("installation", "77"), ("resource", "graphql")))] == 4990


async def test_outcomes_are_counted_once_per_accepted_transition(redis: Redis) -> None:
    metrics = Metrics(redis)
    store = RunStore(redis, metrics)
    run = Run(
        id="r-metrics",
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
        stories={"S1": StoryRecord()},
    )
    await store.create(run)
    await store.update(run.id, lambda r: mark_dispatched(r, ["S1"]))

    def land(r: Run) -> Run | None:
        record = r.stories["S1"]
        if record.state != "running":
            return None  # what a re-delivered job sees: nothing to do
        assert record.started_at is not None
        finished = record.started_at + timedelta(seconds=75)
        stories = {"S1": record.model_copy(update={"state": "landed", "finished_at": finished})}
        return r.model_copy(update={"stories": stories})

    # Ten deliveries of the same result, at once: the CAS accepts one.
    await asyncio.gather(*(store.update(run.id, land) for _ in range(10)))
    await store.update(run.id, lambda r: r.model_copy(update={"state": "done"}))
    await store.update(run.id, lambda r: r.model_copy(update={"state": "done"}))

    got = await scrape(metrics)
    standard = (("outcome", "landed"), ("tier", "standard"))
    assert got[("baro_stories_total", standard)] == 1
    assert got[("baro_story_duration_seconds_count", standard)] == 1
    assert got[("baro_story_duration_seconds_sum", standard)] == 75
    assert got[("baro_story_duration_seconds_bucket", (("le", "60.0"), *standard))] == 0
    assert got[("baro_story_duration_seconds_bucket", (("le", "120.0"), *standard))] == 1
    assert got[("baro_runs_finished_total", (("state", "done"),))] == 1
    assert got[("baro_runs", (("state", "running"),))] == 0


async def test_runs_gauge_counts_active_runs_by_state(redis: Redis) -> None:
    metrics = Metrics(redis)
    store = RunStore(redis, metrics)
    for i, state in enumerate(["planning", "running", "running", "done"]):
        run = Run(
            id=f"r{i}",
            delivery_id=f"d{i}",
            installation_id=1,
            owner="o",
            repo="r",
            issue_number=i,
            issue_title="t",
            requester="alice",
            trigger="label",
        )
        await store.create(run)
        await store.update(run.id, lambda r, s=state: r.model_copy(update={"state": s}))  # type: ignore[misc]
    got = await scrape(metrics)
    assert got[("baro_runs", (("state", "planning"),))] == 1
    assert got[("baro_runs", (("state", "running"),))] == 2
    assert got[("baro_runs", (("state", "queued"),))] == 0
    assert got[("baro_runs_finished_total", (("state", "done"),))] == 1


async def test_runner_presence_counts_live_and_busy_runners(redis: Redis) -> None:
    metrics = Metrics(redis)
    first = RunnerPresence(metrics, "host-1", slots=2, interval_s=0.1)
    second = RunnerPresence(metrics, "host-2", slots=3, interval_s=10)
    await first.start()
    await second.start()
    await first.job_started()
    await first.job_started()
    got = await scrape(metrics)
    assert got[("baro_runners", ())] == 2
    assert got[("baro_runners_busy", ())] == 1
    assert got[("baro_runner_slots", ())] == 5
    assert got[("baro_runner_slots_busy", ())] == 2
    entry = json.loads(await redis.hget(RUNNERS, "host-2"))  # type: ignore[misc]
    assert 0 < entry["expires"] - time.time() <= 30

    await first.job_ended()
    await asyncio.sleep(0.35)  # heartbeats keep the short-lived key alive
    got = await scrape(metrics)
    assert (got[("baro_runners", ())], got[("baro_runner_slots_busy", ())]) == (2, 1)

    await first.stop()  # a clean shutdown: gone at once
    got = await scrape(metrics)
    assert (got[("baro_runners", ())], got[("baro_runners_busy", ())]) == (1, 0)

    # A runner that dies without stopping disappears when its key expires.
    dead = RunnerPresence(metrics, "host-3", slots=1, interval_s=0.3)
    await dead.start()
    assert dead._task is not None and dead.ttl_s == 1
    dead._task.cancel()
    got = await scrape(metrics)
    assert got[("baro_runners", ())] == 2
    await asyncio.sleep(1.3)
    got = await scrape(metrics)
    assert got[("baro_runners", ())] == 1
    await second.stop()


async def test_an_outage_neither_raises_nor_loses_or_doubles_counts() -> None:
    server = RedisServer()
    server.start()
    client = Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=1)
    metrics = Metrics(client)
    try:
        server.stop()
        # Recording while Redis is down never raises.
        await metrics.delivery("issues", "queue_unavailable")
        await metrics.delivery("issues", "queue_unavailable")
        await metrics.story_started("light", 1.0)
        await metrics.rate_limit(1, "core", 10)  # a gauge is dropped, not replayed
        with pytest.raises((RedisError, OSError)):  # reading does raise (web: 503)
            await scrape(metrics)
        server.start()
        await metrics.delivery("issues", "queued")  # the next write sends what was kept
        await metrics.flush()
        got = await scrape(metrics)
        got_again = await scrape(metrics)
    finally:
        await client.aclose()
        server.stop()
    queued = (("event", "issues"), ("outcome", "queued"))
    assert got[("baro_webhook_deliveries_total", queued)] == 1
    unavailable = (("event", "issues"), ("outcome", "queue_unavailable"))
    assert got[("baro_webhook_deliveries_total", unavailable)] == 2
    assert got[("baro_story_queue_wait_seconds_count", (("tier", "light"),))] == 1
    assert (
        "baro_github_rate_limit_remaining",
        (("installation", "1"), ("resource", "core")),
    ) not in got
    assert got_again == got


async def test_a_job_whose_story_lands_holds_no_busy_slot(redis: Redis) -> None:
    """A runner runs one more job per story that is landing: its slots in use count agents
    at work, never more than it has."""
    metrics = Metrics(redis)
    landing = [0]
    runner = RunnerPresence(metrics, "host-l", slots=1, interval_s=10, landing=lambda: landing[0])
    await runner.start()
    await runner.job_started()
    landing[0] = 1  # its story lands; the next job starts beside it
    await runner.job_started()
    got = await scrape(metrics)
    assert (got[("baro_runner_slots", ())], got[("baro_runner_slots_busy", ())]) == (1, 1)
    await runner.stop()

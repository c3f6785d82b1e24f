"""The redelivery reconciler: its decisions (pure), and passes against the testbed and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from githubkit import AppAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from redis.asyncio import Redis

from app import keys
from app.services import SERVICES, Services
from app.settings import Settings
from app.worker.main import reap
from app.worker.recovery import recovery_crons
from app.worker.redelivery import (
    MAX_PER_GUID,
    Asked,
    Attempt,
    list_attempts,
    next_cursor,
    plan_redeliveries,
    reconcile,
    redeliver_failed,
    wait_before_next,
)
from testbed.github.routes_hooks import deliver_recorded
from testbed.github.server import TestbedServer, running_testbed
from testbed.github.state import App, GitHubState
from testbed.waiting import wait_for
from tests.testbed.receiver import Receiver, running_receiver

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


def attempt(id: int, guid: str, status: int, minutes_ago: float = 1) -> Attempt:
    return Attempt(id, guid, at(minutes_ago), status, "issues", "labeled")


# The decision (pure) ------------------------------------------------------------------------


def test_only_events_never_answered_2xx_are_redelivered_newest_attempt_once() -> None:
    plan = plan_redeliveries(
        [
            attempt(9, "failed-twice", 503, 2),
            attempt(8, "answered", 202),
            attempt(7, "failed-then-ok", 200),
            attempt(5, "failed-then-ok", 503),
            attempt(4, "failed-twice", 0, 5),
            attempt(3, "ok-then-failed", 500),
            attempt(2, "ok-then-failed", 204),
        ],
        {},
        NOW,
    )
    assert [(a.guid, a.id) for a in plan.redeliver] == [("failed-twice", 9)]
    assert plan.skipped == {}


def test_oldest_events_first_and_at_most_max_per_pass() -> None:
    attempts = [attempt(10 - n, f"g{n}", 503, n) for n in range(5)]
    plan = plan_redeliveries(attempts, {}, NOW, max_per_pass=2)
    assert [a.guid for a in plan.redeliver] == ["g4", "g3"]
    assert plan.skipped == {"g2": "deferred", "g1": "deferred", "g0": "deferred"}


def test_permanent_rejections_and_expired_attempts_are_not_asked_for() -> None:
    plan = plan_redeliveries(
        [
            attempt(4, "malformed", 400),
            attempt(3, "too-large", 413),
            attempt(2, "about-to-expire", 503, 3 * 24 * 60 - 5),
            attempt(1, "unauthorized", 401),
        ],
        {},
        NOW,
    )
    assert [a.guid for a in plan.redeliver] == ["unauthorized"]
    assert plan.skipped == {
        "malformed": "rejected",
        "too-large": "rejected",
        "about-to-expire": "expired",
    }


def test_a_requested_redelivery_waits_with_growing_backoff() -> None:
    assert [wait_before_next(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=5),
        timedelta(minutes=20),
        timedelta(minutes=80),
        timedelta(minutes=320),
    ]
    asked_once = {"g": Asked(1, 5, at(4))}
    # In flight: asked 4 minutes ago, nothing new listed yet.
    in_flight = plan_redeliveries([attempt(5, "g", 503, 10)], asked_once, NOW)
    assert (in_flight.redeliver, in_flight.skipped) == ([], {"g": "waiting"})
    # The redelivery failed too: still waits for the backoff.
    failed_again = plan_redeliveries(
        [attempt(6, "g", 503, 3), attempt(5, "g", 503, 10)], asked_once, NOW
    )
    assert failed_again.skipped == {"g": "waiting"}
    # Backoff over: ask again, for the newest attempt.
    asked_long_ago = {"g": Asked(1, 5, at(6))}
    again = plan_redeliveries(
        [attempt(6, "g", 503, 3), attempt(5, "g", 503, 10)], asked_long_ago, NOW
    )
    assert [a.id for a in again.redeliver] == [6]
    # A redelivery GitHub never made (nothing new after the backoff) is asked for again.
    lost = plan_redeliveries([attempt(5, "g", 503, 10)], asked_long_ago, NOW)
    assert [a.id for a in lost.redeliver] == [5]
    # Answered OK after our request: done, whatever was asked.
    done = plan_redeliveries([attempt(6, "g", 202, 3), attempt(5, "g", 503, 10)], asked_once, NOW)
    assert (done.redeliver, done.skipped) == ([], {})


def test_at_most_max_per_guid_requests() -> None:
    asked = {"g": Asked(MAX_PER_GUID, 7, at(2))}
    pending = plan_redeliveries([attempt(7, "g", 503, 3)], asked, NOW)
    assert pending.skipped == {"g": "waiting"}  # the last request's answer is not in yet
    spent = plan_redeliveries([attempt(8, "g", 503, 1), attempt(7, "g", 503, 3)], asked, NOW)
    assert (spent.redeliver, spent.skipped) == ([], {"g": "exhausted"})
    spent_later = plan_redeliveries(
        [attempt(8, "g", 503, 1)], {"g": Asked(MAX_PER_GUID, 7, at(10 * 24 * 60))}, NOW
    )
    assert spent_later.skipped == {"g": "exhausted"}


def test_asked_round_trips_and_link_cursor() -> None:
    asked = Asked(2, 12_000_000_009, NOW, gave_up=True)
    assert Asked.load(asked.dump()) == asked
    assert Asked.load(Asked(1, 3, NOW).dump()).gave_up is False
    link = (
        '<https://api.github.com/app/hook/deliveries?per_page=100&cursor=v1_123>; rel="next", '
        '<https://api.github.com/app/hook/deliveries?per_page=100>; rel="first"'
    )
    assert next_cursor(link) == "v1_123"
    assert next_cursor('<https://api.github.com/x?cursor=v1_1>; rel="prev"') is None
    assert next_cursor(None) is None


def settings_for(testbed_url: str, app: App, redis_url: str, interval: int) -> Settings:
    return Settings(
        github_app_id=app.id,
        github_private_key=app.private_key_pem,
        github_webhook_secret=app.webhook_secret,
        github_app_slug=app.slug,
        github_api_url=testbed_url,
        redis_url=redis_url,
        redelivery_interval_seconds=interval,
    )


def test_cron_ticks_often_enough_for_the_interval(redis_url: str) -> None:
    app = GitHubState().create_app("cron-bot")

    def ticks(interval: int) -> Any:
        jobs = recovery_crons(settings_for("http://127.0.0.1:9", app, redis_url, interval), reap)[
            1:
        ]
        return sorted(jobs[0].second) if jobs else None  # type: ignore[arg-type]

    assert ticks(0) is None
    assert ticks(1) == list(range(60))
    assert ticks(300) == [0, 30]
    assert ticks(60) == list(range(0, 60, 6))


# Passes against the testbed and Redis -------------------------------------------------------


@pytest.fixture(scope="module")
def testbed() -> Iterator[TestbedServer]:
    with GitHubState() as state, running_testbed(state) as server:
        yield server


@dataclass
class Setup:
    testbed: TestbedServer
    app: App
    gh: GitHub[AppAuthStrategy]
    redis: Redis
    receiver: Receiver

    @property
    def state(self) -> GitHubState:
        return self.testbed.state

    async def deliver(self, status: int, guid: str | None = None) -> str:
        """One recorded `issues.labeled` delivery that the receiver answers with `status`."""
        self.receiver.answer(status)
        guid = guid or str(uuid.uuid4())
        body = {"action": "labeled", "installation": {"id": 1}, "repository": {"id": 2}}
        async with httpx.AsyncClient(timeout=5) as client:
            await deliver_recorded(
                self.state, self.app, client, self.receiver.url, "issues", body, guid
            )
        return guid

    def attempts(self, guid: str) -> list[Any]:
        return self.state.hooks.attempts(guid)

    async def wait_attempts(self, guid: str, count: int) -> list[Any]:
        return await wait_for(lambda: len(a := self.attempts(guid)) == count and a, 10)

    async def requests(self, method: str, path: str, expected: int) -> int:
        """How many such requests the testbed answered, once `expected` are in (it logs a
        request after answering it, so a count taken at once could miss the last one)."""

        def count() -> int:
            return len(self.state.request_log(method, path))

        await wait_for(lambda: count() >= expected or None, timeout=5)
        await asyncio.sleep(0.05)
        return count()

    async def redeliver_requests(self, expected: int) -> int:
        return await self.requests("POST", r"^/app/hook/deliveries/\d+/attempts$", expected)


@pytest.fixture
async def setup(testbed: TestbedServer, redis_url: str) -> AsyncIterator[Setup]:
    app = testbed.state.create_app(f"redeliver-{uuid.uuid4().hex[:8]}")
    gh = GitHub(
        AppAuthStrategy(str(app.id), app.private_key_pem),
        base_url=testbed.url,
        cache_strategy=MemCacheStrategy(),
        auto_retry=False,
    )
    redis = Redis.from_url(redis_url)
    testbed.state.faults.clear()
    testbed.state.requests.clear()
    with running_receiver() as receiver:
        async with gh:
            yield Setup(testbed, app, gh, redis, receiver)
    await redis.aclose()


async def test_a_failed_delivery_is_redelivered_once_and_an_answered_one_never(
    setup: Setup,
) -> None:
    failed = await setup.deliver(503)
    answered = await setup.deliver(202)
    setup.receiver.answer(default=202)

    first = await reconcile(setup.gh, setup.redis, spacing=0)
    assert (first.outcome, first.listed, first.redelivered) == ("done", 2, [failed])
    attempts = await setup.wait_attempts(failed, 2)
    assert (attempts[1].redelivery, attempts[1].status) == (True, "OK")
    assert setup.receiver.guids() == [failed, answered, failed]
    assert Asked.load(await setup.redis.get(keys.redelivery_asked(failed)) or b"").count == 1

    second = await reconcile(setup.gh, setup.redis, spacing=0)
    assert (second.outcome, second.redelivered, second.skipped) == ("done", [], {})
    assert await setup.redeliver_requests(1) == 1
    assert len(setup.attempts(answered)) == 1


async def test_requests_stop_after_max_per_guid(setup: Setup) -> None:
    guid = await setup.deliver(503)
    setup.receiver.answer(default=503)
    for n in range(1, 4):
        result = await reconcile(
            setup.gh, setup.redis, spacing=0, max_per_guid=3, retry_base=timedelta(0)
        )
        assert result.redelivered == [guid]
        await setup.wait_attempts(guid, n + 1)
    spent = await reconcile(
        setup.gh, setup.redis, spacing=0, max_per_guid=3, retry_base=timedelta(0)
    )
    assert (spent.redelivered, spent.skipped) == ([], {guid: "exhausted"})
    asked = Asked.load(await setup.redis.get(keys.redelivery_asked(guid)) or b"")
    assert (asked.count, asked.gave_up) == (3, True)
    assert await setup.redeliver_requests(3) == 3
    ttl = await setup.redis.ttl(keys.redelivery_asked(guid))
    assert 3 * 24 * 3600 - 60 < ttl <= 3 * 24 * 3600


async def test_a_requested_redelivery_is_not_asked_for_again_until_the_backoff_ends(
    setup: Setup,
) -> None:
    guid = await setup.deliver(503)
    setup.receiver.answer(default=503)
    assert (await reconcile(setup.gh, setup.redis, spacing=0)).redelivered == [guid]
    await setup.wait_attempts(guid, 2)
    again = await reconcile(setup.gh, setup.redis, spacing=0)
    assert (again.redelivered, again.skipped) == ([], {guid: "waiting"})

    def later() -> datetime:
        return datetime.now(UTC) + timedelta(minutes=6)

    after_backoff = await reconcile(setup.gh, setup.redis, spacing=0, now=later)
    assert after_backoff.redelivered == [guid]
    await setup.wait_attempts(guid, 3)
    assert await setup.redeliver_requests(2) == 2


async def test_github_errors_end_the_pass_without_raising(setup: Setup) -> None:
    first, second = await setup.deliver(503), await setup.deliver(503)
    setup.receiver.answer(default=202)
    faults = setup.state.faults
    faults.server_error(method="GET", path=r"^/app/hook/deliveries$")
    assert (await reconcile(setup.gh, setup.redis, spacing=0)).outcome == "error"
    faults.secondary_rate_limit(method="GET", path=r"^/app/hook/deliveries$")
    assert (await reconcile(setup.gh, setup.redis, spacing=0)).outcome == "error"
    assert await setup.redeliver_requests(0) == 0

    faults.server_error(method="POST", path=r"/attempts$", status=502)
    broken = await reconcile(setup.gh, setup.redis, spacing=0)
    assert (broken.outcome, broken.redelivered) == ("error", [])
    assert await setup.redeliver_requests(1) == 1  # the pass ended at the first failure
    assert await setup.redis.get(keys.redelivery_asked(first)) is None

    healed = await reconcile(setup.gh, setup.redis, spacing=0)
    assert (healed.outcome, healed.redelivered) == ("done", [first, second])
    await setup.wait_attempts(first, 2)
    await setup.wait_attempts(second, 2)


async def test_old_or_refused_deliveries_are_not_asked_for_again(setup: Setup) -> None:
    old = await setup.deliver(503)
    setup.state.hooks.backdate(setup.attempts(old)[0].id, timedelta(days=3))
    refused = await setup.deliver(503)
    setup.state.faults.validation_failed(method="POST", path=r"/attempts$")
    result = await reconcile(setup.gh, setup.redis, spacing=0)
    assert (result.outcome, result.redelivered) == ("done", [])
    assert result.skipped == {old: "expired"}
    asked = Asked.load(await setup.redis.get(keys.redelivery_asked(refused)) or b"")
    assert asked.gave_up
    later = await reconcile(
        setup.gh, setup.redis, spacing=0, now=lambda: datetime.now(UTC) + timedelta(hours=12)
    )
    assert later.redelivered == []
    assert later.skipped[refused] == "exhausted"
    assert await setup.redeliver_requests(1) == 1


async def test_one_pass_at_a_time(setup: Setup) -> None:
    await setup.deliver(503)
    lock = setup.redis.lock(keys.REDELIVERY_LOCK, timeout=30)
    assert await lock.acquire(blocking=False)
    try:
        assert (await reconcile(setup.gh, setup.redis, spacing=0)).outcome == "locked"
    finally:
        await lock.release()
    assert await setup.redeliver_requests(0) == 0
    assert (await reconcile(setup.gh, setup.redis, spacing=0)).outcome == "done"


async def test_listing_pages_back_to_the_window_only(setup: Setup) -> None:
    hooks = setup.state.hooks
    for n in range(120):
        record = hooks.add(
            app_id=setup.app.id,
            guid=f"g{n}",
            event="issues",
            url=setup.receiver.url,
            body=b"{}",
            request_headers={},
            status_code=202,
        )
        if n < 60:
            hooks.backdate(record.id, timedelta(days=4))
    since = datetime.now(UTC) - timedelta(days=3)
    found = await list_attempts(setup.gh, since, per_page=50)
    # 60 recent ones, newest first: page 2 ends in old ones, so page 3 is never asked for.
    assert [a.guid for a in found] == [f"g{n}" for n in reversed(range(20, 120))]
    assert await setup.requests("GET", r"^/app/hook/deliveries$", 2) == 2
    everything = await list_attempts(setup.gh, since - timedelta(days=2), per_page=50)
    assert len(everything) == 120


async def test_the_cron_job_runs_a_pass_when_due(setup: Setup, redis_url: str) -> None:
    guid = await setup.deliver(503)
    setup.receiver.answer(default=202)
    settings = settings_for(setup.testbed.url, setup.app, redis_url, 60)
    services = Services.open(settings, setup.redis)
    ctx = {SERVICES: services}
    try:
        assert await redeliver_failed(ctx) == "done"
        assert await redeliver_failed(ctx) == "not due"
    finally:
        await services.close()
    await setup.wait_attempts(guid, 2)
    assert await setup.redeliver_requests(1) == 1

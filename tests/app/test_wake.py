"""Workers woken by enqueues and by their own jobs ending, against a real Redis and arq."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.worker import Worker, func

from app.queue import connect
from app.wake import WakingWorker, wake_channel
from testbed.waiting import wait_for
from tests.arq_workers import options, running

QUEUE = "baro:test-wake"
ASLEEP = 3600.0
"""An idle poll no test can wait out: a job done in time was woken, not polled."""


async def noted(ctx: dict[str, Any], name: str) -> str:
    ctx["done"].append(name)
    return name


@contextlib.asynccontextmanager
async def worker(redis_url: str, **extra: Any) -> AsyncIterator[list[str]]:
    done: list[str] = []
    w = WakingWorker(
        functions=[func(noted, name="noted")],
        ctx={"done": done},
        **options(redis_url, QUEUE),
        **extra,
    )
    async with running(w):
        yield done


async def until(done: list[str], count: int) -> None:
    await wait_for(lambda: len(done) >= count, 10, f"{count} jobs to run (ran {done})")


async def test_an_enqueued_job_wakes_the_worker(redis_url: str) -> None:
    redis = connect(redis_url)
    try:
        async with worker(redis_url, idle_poll=ASLEEP) as done:
            await asyncio.sleep(0.3)  # subscribed, and past its first poll
            await redis.enqueue_job("noted", "first", _queue_name=QUEUE)
            await until(done, 1)
            await redis.enqueue_job("noted", "second", _queue_name=QUEUE)
            await until(done, 2)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert done == ["first", "second"]


async def test_a_job_ending_frees_its_slot_at_once(redis_url: str) -> None:
    """With one slot, the second queued job starts when the first ends, not at the next
    idle poll."""
    redis = connect(redis_url)
    try:
        for name in ("a", "b", "c"):
            await redis.enqueue_job("noted", name, _queue_name=QUEUE)
        async with worker(redis_url, idle_poll=ASLEEP, max_jobs=1) as done:
            await until(done, 3)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert sorted(done) == ["a", "b", "c"]


async def test_deferred_jobs_are_still_found_by_the_idle_poll(redis_url: str) -> None:
    """A deferred enqueue wakes nobody (the job is not due); the idle poll finds it."""
    redis = connect(redis_url)
    try:
        async with worker(redis_url, idle_poll=0.2) as done:
            await redis.enqueue_job("noted", "later", _queue_name=QUEUE, _defer_by=0.3)
            await until(done, 1)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert done == ["later"]


async def test_only_due_and_new_jobs_publish_a_wake_up(redis_url: str) -> None:
    redis = connect(redis_url)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(wake_channel(QUEUE))
        assert (await pubsub.get_message(timeout=1))["type"] == "subscribe"
        await redis.enqueue_job("noted", "x", _queue_name=QUEUE, _job_id="one")
        await redis.enqueue_job("noted", "x", _queue_name=QUEUE, _job_id="one")  # a no-op
        await redis.enqueue_job("noted", "y", _queue_name=QUEUE, _defer_by=60)
        past = datetime.now(UTC) - timedelta(seconds=60)  # due: put ahead of the line
        await redis.enqueue_job("noted", "z", _queue_name=QUEUE, _defer_until=past)
        later = datetime.now(UTC) + timedelta(seconds=60)
        await redis.enqueue_job("noted", "w", _queue_name=QUEUE, _defer_until=later)
        seen = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            seen.append(message["channel"])
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose(close_connection_pool=True)
    assert seen == [wake_channel(QUEUE).encode()] * 2


def test_the_arq_hook_for_a_freed_slot_still_exists() -> None:
    """WakingWorker polls again when a job ends through arq's own release hook; an arq
    that renamed it would silently lose that (this pins it)."""
    assert callable(getattr(Worker, "_release_sem_dec_counter_on_complete", None))
    assert callable(getattr(Worker, "_poll_iteration", None))


async def test_a_job_put_ahead_of_the_line_starts_first_and_wakes_the_worker(
    redis_url: str,
) -> None:
    """`Jobs` scores a job that may not wait (a story finished) in the past: arq starts due
    jobs lowest score first, so it goes before those queued earlier."""
    from arq.connections import ArqRedis

    from app.jobs import Jobs

    redis = connect(redis_url)
    try:
        for name in ("queued-1", "queued-2"):
            await redis.enqueue_job("noted", name, _queue_name=QUEUE)
        jobs = Jobs(redis)
        await jobs._enqueue(QUEUE, "noted", "ahead", ahead=True)
        assert isinstance(redis, ArqRedis)
        async with worker(redis_url, idle_poll=ASLEEP, max_jobs=1) as done:
            await until(done, 3)
    finally:
        await redis.aclose(close_connection_pool=True)
    assert done[0] == "ahead"

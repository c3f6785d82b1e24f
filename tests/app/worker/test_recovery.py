"""Pending triggers against a real Redis: what the reaper may re-enqueue, and when."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from app import keys
from app.pending import MAX_RESUMES, PendingTriggers, enqueue_intake
from app.queue import ORCHESTRATOR_QUEUE, connect
from app.store import RunStore
from app.worker.recovery import TRIGGER_RESUME_AFTER_SECONDS, resume_triggers


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = connect(redis_url)
    yield client
    await client.aclose(close_connection_pool=True)


async def test_a_fresh_trigger_is_not_stale_and_a_finished_one_is_gone(redis: ArqRedis) -> None:
    triggers = PendingTriggers(redis)
    await triggers.record("d-1", {"delivery_id": "d-1"})
    assert await triggers.stale(TRIGGER_RESUME_AFTER_SECONDS) == []
    assert await triggers.stale(older_than=0) == ["d-1"]
    await triggers.finish("d-1")
    assert await triggers.is_done("d-1")
    assert await triggers.stale(older_than=0) == []


async def test_resume_hands_back_the_payload_until_it_gives_up(redis: ArqRedis) -> None:
    triggers = PendingTriggers(redis)
    await triggers.record("d-2", {"delivery_id": "d-2", "kind": "label"})
    for _ in range(MAX_RESUMES):
        assert await triggers.resume("d-2") == {"delivery_id": "d-2", "kind": "label"}
    assert await triggers.resume("d-2") is None
    assert await triggers.stale(older_than=0) == []


async def test_the_reaper_skips_a_held_intake_and_requeues_an_orphan(
    redis: ArqRedis,
) -> None:
    store = RunStore(redis)
    triggers = PendingTriggers(redis)
    await triggers.record("held", {"delivery_id": "held"})
    await triggers.record("orphan", {"delivery_id": "orphan"})
    await enqueue_intake(redis, {"delivery_id": "orphan"}, "orphan", fresh=False)
    await store.acquire_lease("trigger", "held", "intake:alive", 30)
    # Both were queued long ago.
    await redis.zadd(keys.PENDING_TRIGGERS, {"held": 0, "orphan": 0})

    assert await resume_triggers(redis, store) == ["trigger:orphan"]
    queued = await redis.queued_jobs(queue_name=ORCHESTRATOR_QUEUE)
    ids = sorted(job.job_id or "" for job in queued)
    assert ids[0] == "trigger:orphan" and ids[1].startswith("trigger:orphan:"), ids
    assert await resume_triggers(redis, store) == []  # just re-queued: not stale again yet

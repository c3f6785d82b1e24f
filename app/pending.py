"""Triggers between the webhook and their run: none lost when a worker dies mid-intake.

arq re-runs a job whose worker was killed only after its in-progress key expires — the
longest job timeout plus 10 s, half an hour on the orchestrator queue. So the web process
records each queued trigger as pending; the intake job holds a heartbeat lease while it works
and marks the trigger done at the end; the reaper re-enqueues a pending trigger that nobody
holds. The done marker also turns arq's late re-run of a finished intake into a no-op.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from app import keys
from app.queue import ORCHESTRATOR_QUEUE

log = logging.getLogger(__name__)

DONE_SECONDS = 4 * 24 * 3600  # as long as the web process dedups the delivery
LEASE_SECONDS = 10.0
LEASE_SCOPE = "trigger"  # intake leases: RunStore leases keyed (LEASE_SCOPE, delivery id)
MAX_RESUMES = 5


@dataclass(frozen=True)
class PendingTriggers:
    redis: Redis

    async def record(self, delivery: str, payload: dict[str, Any]) -> None:
        """Called by the web process before it enqueues the intake job."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.TRIGGER_PAYLOADS, delivery, json.dumps(payload))
            pipe.zadd(keys.PENDING_TRIGGERS, {delivery: time.time()})
            await pipe.execute()

    async def forget(self, delivery: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.PENDING_TRIGGERS, delivery)
            pipe.hdel(keys.TRIGGER_PAYLOADS, delivery)
            pipe.hdel(keys.TRIGGER_ATTEMPTS, delivery)
            await pipe.execute()

    async def is_done(self, delivery: str) -> bool:
        return bool(await self.redis.exists(keys.trigger_done(delivery)))

    async def finish(self, delivery: str) -> None:
        """The intake finished (whatever its outcome): never handle this delivery again."""
        await self.redis.set(keys.trigger_done(delivery), "1", ex=DONE_SECONDS)
        await self.forget(delivery)

    async def stale(self, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        found = await self.redis.zrangebyscore(keys.PENDING_TRIGGERS, "-inf", cutoff)
        return [d.decode() if isinstance(d, bytes) else str(d) for d in found]

    async def resume(self, delivery: str) -> dict[str, Any] | None:
        """Count a re-enqueue and return the payload to enqueue, or None when the trigger has
        been tried too often (it is dropped: an intake that fails five times is a bug)."""
        attempts = int(await self.redis.hincrby(keys.TRIGGER_ATTEMPTS, delivery, 1))  # type: ignore[misc]
        raw = await self.redis.hget(keys.TRIGGER_PAYLOADS, delivery)  # type: ignore[misc]
        if raw is None or attempts > MAX_RESUMES:
            await self.forget(delivery)
            return None
        await self.redis.zadd(keys.PENDING_TRIGGERS, {delivery: time.time()})
        payload: dict[str, Any] = json.loads(raw)
        return payload


async def enqueue_intake(
    redis: Any, payload: dict[str, Any], delivery: str, *, fresh: bool
) -> None:
    """The intake job for a delivery; `fresh` gives a resumed trigger a new job id (the dead
    worker's job id stays taken until arq's in-progress key expires)."""
    job_id = f"trigger:{delivery}" + (f":{uuid.uuid4().hex[:8]}" if fresh else "")
    await redis.enqueue_job(
        "handle_trigger", payload, _job_id=job_id, _queue_name=ORCHESTRATOR_QUEUE
    )

"""A real arq worker of baro's kind, run inside a test on a queue of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from arq.worker import Worker

from app.queue import deserialize, redis_settings, serialize


def options(redis_url: str, queue: str) -> dict[str, Any]:
    """What every test worker shares: JSON jobs as in production, no signal handlers, and
    polls at most 100 times a second."""
    return {
        "queue_name": queue,
        "redis_settings": redis_settings(redis_url),
        "handle_signals": False,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "poll_delay": 0.01,
    }


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.main())
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()

"""Waking an arq worker when a job is enqueued, instead of leaving it to the next poll.

arq finds new jobs by polling its queue. A run hops between the processes a dozen times
(intake, planning, each story to a runner and back, verification), and every hop waited for
half a poll on average: a fixed cost on the critical path that no amount of parallelism
hides. An enqueue now publishes on its queue's channel and the workers listening poll at
once; without a message they poll every `idle_poll` seconds, which still finds deferred jobs,
cron ticks and anything a lost message (a Redis reconnect) left behind. A worker also polls
again the moment one of its own jobs ends, since a slot just freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job
from arq.worker import Worker
from redis.asyncio import Redis

from app import keys

log = logging.getLogger(__name__)

LISTEN_RETRY_SECONDS = 1.0
"""Pause before subscribing again after the subscription failed (Redis restarting)."""


def wake_channel(queue: str) -> str:
    return f"{keys.PREFIX}wake:{queue}"


async def listen(redis: Redis, channel: str, on_message: Callable[[bytes], None]) -> None:
    """Call `on_message` with each message's data on `channel` until cancelled; a lost
    subscription is made again, and `on_message(b"")` then says that messages may have
    been missed meanwhile."""
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            on_message(b"")
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    data = message.get("data")
                    on_message(data if isinstance(data, bytes) else b"")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("subscription to %s lost (%s); subscribing again", channel, exc)
            await asyncio.sleep(LISTEN_RETRY_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


class WakingRedis(ArqRedis):
    """An ArqRedis whose enqueues of jobs due now wake the queue's workers."""

    async def enqueue_job(
        self,
        function: str,
        *args: Any,
        _queue_name: str | None = None,
        _defer_until: Any = None,
        _defer_by: Any = None,
        **kwargs: Any,
    ) -> Job | None:
        job = await super().enqueue_job(
            function,
            *args,
            _queue_name=_queue_name,
            _defer_until=_defer_until,
            _defer_by=_defer_by,
            **kwargs,
        )
        due = _defer_until is None or (
            isinstance(_defer_until, datetime) and _defer_until.timestamp() <= time.time()
        )
        if job is not None and due and not _defer_by:
            try:
                await self.publish(wake_channel(_queue_name or self.default_queue_name), b"")
            except Exception:  # the job is queued; the next idle poll finds it
                log.debug("could not wake the workers of %s", _queue_name, exc_info=True)
        return job


class WakingWorker(Worker):
    """An arq Worker that polls when woken (an enqueue, one of its jobs ending) and otherwise
    every `idle_poll` seconds; `poll_delay` stays the least time between two polls."""

    def __init__(self, *args: Any, idle_poll: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_poll = idle_poll
        self._woken = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def _poll_iteration(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="arq-wake-listener")
        self._woken.clear()
        await super()._poll_iteration()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), self.idle_poll)

    def wake(self) -> None:
        """Poll now (a job of this worker freed its slot early)."""
        self._woken.set()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._woken.set()

    async def _listen(self) -> None:
        await listen(self.pool, wake_channel(self.queue_name), lambda _: self._woken.set())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await super().close()

"""A runner process's presence in the shared store: alive (TTL), its slots, how many are busy.

The web process's `/metrics` reads these (`baro_runners`, busy slots); a runner that died
without saying goodbye drops out when its entry's time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from app.metrics import Metrics

RUNNER_TTL_BEATS = 3
"""A runner's presence key outlives this many missed heartbeats."""


class RunnerPresence:
    """A runner process's presence key: alive (TTL), its job slots and how many are busy."""

    def __init__(
        self,
        metrics: Metrics,
        runner_id: str,
        slots: int,
        interval_s: float,
        landing: Callable[[], int] = lambda: 0,
    ) -> None:
        self.metrics = metrics
        self.runner_id = runner_id
        self.slots = slots
        self.interval_s = interval_s
        self.busy = 0
        self.landing = landing
        """Jobs whose story is landing: they hold no slot (`runner.slots`)."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def ttl_s(self) -> int:
        return max(1, math.ceil(self.interval_s * RUNNER_TTL_BEATS))

    async def start(self) -> None:
        await self._publish()
        self._task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.metrics.runner_gone(self.runner_id)

    async def job_started(self) -> None:
        self.busy += 1
        await self._publish()

    async def job_ended(self) -> None:
        self.busy = max(0, self.busy - 1)
        await self._publish()

    async def _publish(self) -> None:
        async with self._lock:  # in order, so a late write never shows an old busy count
            busy = max(0, self.busy - self.landing())
            await self.metrics.runner_alive(self.runner_id, self.slots, busy, self.ttl_s)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._publish()

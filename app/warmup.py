"""Runners warm their mirror of a run's repository while the run is being planned.

A run's first stories start on a runner whose mirror may not hold the repository yet: a
clone, a token mint and a repository lookup before the first worktree, on the critical path
of every first-level story. The planner announces the base it plans on as soon as it has
cloned; every runner listening fetches it (and mints its token) while the planner's model
thinks. Best effort: a runner that missed the message fetches when its story starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from app import keys
from app.gitcmd import SHA_PATTERN
from app.wake import listen

log = logging.getLogger(__name__)

WARM_CHANNEL = f"{keys.PREFIX}warm"
WARMING_AT_ONCE = 2
"""Fetches a runner makes for warm-ups at the same time (more would compete with stories)."""


class WarmUp(BaseModel):
    """The base a run is planned on. Read off Redis: checked before it reaches git."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(max_length=200)
    branch: str = Field(max_length=300)
    sha: str = Field(pattern=SHA_PATTERN)


async def announce(redis: Redis, warm: WarmUp) -> None:
    """Tell the runners; never raises (the stories fetch for themselves otherwise)."""
    try:
        await redis.publish(WARM_CHANNEL, warm.model_dump_json())
    except Exception:
        log.debug("could not announce the base of %s", warm.run_id, exc_info=True)


class WarmUps:
    """A runner's side: each announced base warmed once, a few at a time, never raising."""

    def __init__(self, redis: Redis, warm: Callable[[WarmUp], Awaitable[None]]) -> None:
        self._redis = redis
        self._warm = warm
        self._slots = asyncio.Semaphore(WARMING_AT_ONCE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: set[str] = set()
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.create_task(listen(self._redis, WARM_CHANNEL, self._heard))

    async def stop(self) -> None:
        for task in [t for t in (self._listener, *self._tasks) if t is not None]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _heard(self, data: bytes) -> None:
        if not data:
            return
        try:
            warm = WarmUp.model_validate_json(data)
        except ValidationError:
            log.warning("ignored a malformed warm-up message (%d bytes)", len(data))
            return
        if warm.sha in self._seen:
            return
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen.add(warm.sha)
        task = asyncio.create_task(self._run(warm))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, warm: WarmUp) -> None:
        async with self._slots:
            try:
                await self._warm(warm)
            except Exception as exc:  # the story fetches for itself
                log.warning("warming the mirror for run %s failed: %s", warm.run_id, exc)

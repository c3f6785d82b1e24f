"""A runner takes its next story while one of its stories lands (real arq and Redis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from arq.worker import func

from app.queue import connect
from runner.slots import AgentSlots, AttemptSlot, RunnerWorker
from testbed.waiting import wait_for
from tests.arq_workers import options, running

QUEUE = "baro:test-slots"


class Story:
    """A job that gives its slot up (`land`) or not, then waits to be let go."""

    def __init__(self, slots: AgentSlots) -> None:
        self.slots = slots
        self.started: list[str] = []
        self.go = asyncio.Event()

    async def __call__(self, ctx: dict[str, Any], name: str, land: bool) -> str:
        self.started.append(name)
        slot = AttemptSlot(self.slots, self._yes, self._nothing, self._yes)
        if land:
            await slot.free()
        try:
            await self.go.wait()
        finally:
            await slot.close()
        return name

    async def _yes(self) -> bool:
        return True

    async def _nothing(self) -> None:
        return None


@contextlib.asynccontextmanager
async def runner(redis_url: str, story: Story) -> AsyncIterator[None]:
    async def job(ctx: dict[str, Any], name: str, land: bool) -> str:
        return await story(ctx, name, land)

    w = RunnerWorker(
        functions=[func(job, name="story")],
        idle_poll=3600,
        agent_slots=story.slots,
        **options(redis_url, QUEUE),
    )
    async with running(w):
        try:
            yield
        finally:
            story.go.set()
            await asyncio.sleep(0.3)  # the jobs let go end before the worker stops


async def until(check: Any) -> None:
    await wait_for(check, 10, "the stories to start")


async def test_a_landing_story_lets_the_next_one_start(redis_url: str) -> None:
    redis = connect(redis_url)
    story = Story(AgentSlots(1))
    try:
        async with runner(redis_url, story):
            await redis.enqueue_job("story", "lands", True, _queue_name=QUEUE)
            await until(lambda: story.started == ["lands"])
            await redis.enqueue_job("story", "next", False, _queue_name=QUEUE)
            await until(lambda: story.started == ["lands", "next"])
            assert story.slots.jobs_allowed() == 2
            # two jobs at most per agent slot: a third waits although one story lands
            await redis.enqueue_job("story", "third", False, _queue_name=QUEUE)
            await asyncio.sleep(0.5)
            assert story.started == ["lands", "next"]
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_a_story_at_work_keeps_its_slot(redis_url: str) -> None:
    redis = connect(redis_url)
    story = Story(AgentSlots(1))
    try:
        async with runner(redis_url, story):
            await redis.enqueue_job("story", "works", False, _queue_name=QUEUE)
            await until(lambda: story.started == ["works"])
            await redis.enqueue_job("story", "next", False, _queue_name=QUEUE)
            await asyncio.sleep(0.5)
            assert story.started == ["works"]
            story.go.set()  # the first ends: its slot takes the next at once
            await until(lambda: story.started == ["works", "next"])
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_taking_the_slot_back_waits_until_it_is_granted() -> None:
    slots = AgentSlots(2)
    answers = iter([False, False, True])
    asked: list[int] = []

    async def take_back() -> bool:
        asked.append(1)
        return next(answers)

    async def yes() -> bool:
        return True

    async def nothing() -> None:
        return None

    slot = AttemptSlot(slots, yes, nothing, take_back)
    await slot.free()
    assert slots.landing == 1 and slots.jobs_allowed() == 3
    await slot.take()
    assert len(asked) == 3 and slots.landing == 0 and not slot.freed
    await slot.close()
    assert slots.landing == 0


async def test_a_slot_not_given_up_stays_counted_as_at_work() -> None:
    slots = AgentSlots(2)

    async def refused() -> bool:
        raise ConnectionError("redis is down")

    async def nothing() -> None:
        return None

    slot = AttemptSlot(slots, refused, nothing, refused)
    await slot.free()  # logged, and the story lands holding its slot
    assert not slot.freed and slots.landing == 0
    await slot.take()  # nothing to take back

"""A runner's agent slots, apart from its arq job slots.

A story's job runs on until its commit is pushed, but its agent is done before that: the
orchestrator gives the slot to the next story (`app.core.scheduler.working`) while the
landing goes on. So that the runner can take that next story, arq may run one more job per
story of this runner that is landing: `slots` agents at work at most, never more jobs than
twice that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.wake import WakingWorker

log = logging.getLogger(__name__)


class AgentSlots:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.landing = 0
        self._worker: RunnerWorker | None = None

    def jobs_allowed(self) -> int:
        return self.slots + min(self.landing, self.slots)

    def landing_started(self) -> None:
        self.landing += 1
        if self._worker is not None:
            self._worker.wake()  # a slot is free: look for the next story now

    def landing_ended(self) -> None:
        self.landing = max(0, self.landing - 1)


class RunnerWorker(WakingWorker):
    """Takes a job only while fewer than `slots` of its jobs have an agent at work."""

    def __init__(self, *args: Any, agent_slots: AgentSlots, **kwargs: Any) -> None:
        super().__init__(*args, max_jobs=2 * agent_slots.slots, **kwargs)
        self.agent_slots = agent_slots
        agent_slots._worker = self
        self.max_jobs = agent_slots.jobs_allowed()

    async def _poll_iteration(self) -> None:
        self.max_jobs = self.agent_slots.jobs_allowed()
        await super()._poll_iteration()


TAKE_BACK_POLL_SECONDS = 0.2
WAIT_NOTED_SECONDS = 5.0
"""How often a landing story whose agent is needed again asks for its slot back (the slot
is kept for it as soon as it asks: `app.core.scheduler.back_to_work`)."""


@dataclass
class AttemptSlot:
    """One story attempt's agent slot: given up while the story lands, taken back when a
    conflict needs its agent again, so agents at work never exceed the limits."""

    slots: AgentSlots
    give_up: Callable[[], Awaitable[bool]]
    """Mark the attempt landing in the run record (True: it was)."""
    announce: Callable[[], Awaitable[None]]
    """Tell the orchestrator the slot is free."""
    take_back: Callable[[], Awaitable[bool]]
    """Ask for the slot back (True: granted, or the attempt is no longer current)."""
    freed: bool = False
    _freeing: asyncio.Task[None] | None = None

    def free_soon(self) -> None:
        """Give the slot up beside the landing, which need not wait for it (a landing that
        ends first leaves nothing to give up: the record is no longer running)."""
        if self._freeing is None or self._freeing.done():
            self._freeing = asyncio.create_task(self.free())

    async def settle(self) -> None:
        if self._freeing is not None:
            await asyncio.gather(self._freeing, return_exceptions=True)
            self._freeing = None

    async def free(self) -> None:
        if self.freed:
            return
        try:
            if not await self.give_up():
                return
        except Exception:  # the story lands holding its slot: slower, never wrong
            log.warning("could not free the agent slot of a landing story", exc_info=True)
            return
        self.freed = True
        self.slots.landing_started()
        try:
            await self.announce()
        except Exception:  # the next story_finished fills the slot instead
            log.warning("could not announce a free agent slot", exc_info=True)

    async def take(self) -> None:
        await self.settle()
        if not self.freed:
            return
        asked_at: float | None = time.monotonic()
        while True:
            try:
                if await self.take_back():
                    break
            except Exception:
                log.warning("could not take the agent slot back; retrying", exc_info=True)
            if asked_at is not None and time.monotonic() - asked_at > WAIT_NOTED_SECONDS:
                # said once (the job's log context names the story)
                log.info("the story's conflict waits for an agent slot: all are at work")
                asked_at = None
            await asyncio.sleep(TAKE_BACK_POLL_SECONDS)
        self.freed = False
        self.slots.landing_ended()

    async def close(self) -> None:
        """The attempt is over (its job ends): the runner's count of landing jobs drops."""
        await self.settle()
        if self.freed:
            self.freed = False
            self.slots.landing_ended()

"""Enqueuing jobs, each with a job id that makes a repeated enqueue a no-op."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from arq.connections import ArqRedis

from app.queue import ORCHESTRATOR_QUEUE, RUNNER_QUEUE

AHEAD_SECONDS = 60.0
"""How far in the past a job that goes ahead of the line is scored (`Jobs._enqueue`)."""


def _unique(job_id: str) -> str:
    """A job id no earlier enqueue took, for a job that must run again each time it is asked."""
    return f"{job_id}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Jobs:
    redis: ArqRedis

    async def _enqueue(
        self,
        queue: str,
        function: str,
        *args: object,
        job_id: str | None = None,
        defer_by: float | None = None,
        ahead: bool = False,
    ) -> None:
        # arq starts due jobs lowest score first: a score in the past puts a job ahead of
        # those queued now (it is due at once and expires a minute sooner, a day from now)
        until = datetime.now(UTC) - timedelta(seconds=AHEAD_SECONDS) if ahead else None
        await self.redis.enqueue_job(
            function,
            *args,
            _job_id=job_id,
            _defer_by=defer_by,
            _defer_until=until,
            _queue_name=queue,
        )

    async def plan(self, run_id: str) -> None:
        await self._enqueue(ORCHESTRATOR_QUEUE, "plan_run", run_id, job_id=f"plan:{run_id}")

    async def replan(self, run_id: str) -> None:
        """A plan job whose worker died: a new job (the first one's id stays taken)."""
        await self._enqueue(
            ORCHESTRATOR_QUEUE, "plan_run", run_id, job_id=_unique(f"plan:{run_id}")
        )

    async def start(self, run_id: str) -> None:
        await self._enqueue(ORCHESTRATOR_QUEUE, "start_run", run_id, job_id=f"start:{run_id}")

    async def run_story(self, run_id: str, story_id: str, attempt: int) -> None:
        await self._enqueue(
            RUNNER_QUEUE,
            "run_story",
            run_id,
            story_id,
            attempt,
            job_id=f"story:{run_id}:{story_id}:{attempt}",
        )

    async def prepare_run(self, run_id: str, generation: int) -> None:
        """The run's image and `setup:` on a runner before any story (once per generation:
        a retry after a failed preparation is a new one)."""
        await self.redis.enqueue_job(
            "prepare_run",
            run_id,
            generation,
            _job_id=f"prepare:{run_id}:{generation}",
            _queue_name=RUNNER_QUEUE,
        )

    async def story_finished(self, run_id: str, story_id: str, attempt: int) -> None:
        await self._enqueue(
            ORCHESTRATOR_QUEUE,
            "story_finished",
            run_id,
            story_id,
            job_id=f"finished:{run_id}:{story_id}:{attempt}",
            ahead=True,  # its dependents and a free slot wait on it
        )

    async def story_landing(self, run_id: str, story_id: str, attempt: int) -> None:
        """The attempt's agent is done: the orchestrator may fill its slot."""
        await self._enqueue(
            ORCHESTRATOR_QUEUE,
            "story_landing",
            run_id,
            story_id,
            job_id=f"landing:{run_id}:{story_id}:{attempt}:{uuid.uuid4().hex[:8]}",
            ahead=True,  # a free slot waits on it
        )

    async def refresh(self, run_id: str) -> None:
        """Dispatch what can start and re-render the tracking comment."""
        await self._enqueue(ORCHESTRATOR_QUEUE, "refresh_run", run_id)

    async def verify_run(self, run_id: str, round_: int) -> None:
        """Round 1 after the stories, round 2 after a fix story. Each call is a new job: the
        orchestrator enqueues once per round, and again only when a runner died verifying."""
        await self._enqueue(
            RUNNER_QUEUE, "verify_run", run_id, round_, job_id=_unique(f"verify:{run_id}:{round_}")
        )

    async def review(self, run_id: str, round_: int) -> None:
        """A review round of the integrated branch (on the orchestrator: a read-only agent,
        like planning). Each call is a new job, as with verification."""
        await self._enqueue(
            ORCHESTRATOR_QUEUE, "review_run", run_id, job_id=_unique(f"review:{run_id}:{round_}")
        )

    async def run_verified(self, run_id: str, round_: int) -> None:
        await self._enqueue(
            ORCHESTRATOR_QUEUE, "run_verified", run_id, job_id=f"verified:{run_id}:{round_}"
        )

    async def refresh_later(self, run_id: str, delay: float) -> None:
        """One deferred refresh per run at a time (debounced comment edits)."""
        await self._enqueue(
            ORCHESTRATOR_QUEUE,
            "refresh_run",
            run_id,
            False,
            job_id=f"refresh:{run_id}",
            defer_by=delay,
        )

"""Enqueuing jobs, each with a job id that makes a repeated enqueue a no-op."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from arq.connections import ArqRedis

from app.queue import ORCHESTRATOR_QUEUE, RUNNER_QUEUE


@dataclass(frozen=True)
class Jobs:
    redis: ArqRedis

    async def plan(self, run_id: str) -> None:
        await self.redis.enqueue_job(
            "plan_run", run_id, _job_id=f"plan:{run_id}", _queue_name=ORCHESTRATOR_QUEUE
        )

    async def replan(self, run_id: str) -> None:
        """A plan job whose worker died: a new job (the first one's id stays taken)."""
        await self.redis.enqueue_job(
            "plan_run",
            run_id,
            _job_id=f"plan:{run_id}:{uuid.uuid4().hex[:8]}",
            _queue_name=ORCHESTRATOR_QUEUE,
        )

    async def start(self, run_id: str) -> None:
        await self.redis.enqueue_job(
            "start_run", run_id, _job_id=f"start:{run_id}", _queue_name=ORCHESTRATOR_QUEUE
        )

    async def run_story(self, run_id: str, story_id: str, attempt: int) -> None:
        await self.redis.enqueue_job(
            "run_story",
            run_id,
            story_id,
            attempt,
            _job_id=f"story:{run_id}:{story_id}:{attempt}",
            _queue_name=RUNNER_QUEUE,
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
        await self.redis.enqueue_job(
            "story_finished",
            run_id,
            story_id,
            _job_id=f"finished:{run_id}:{story_id}:{attempt}",
            _queue_name=ORCHESTRATOR_QUEUE,
        )

    async def refresh(self, run_id: str) -> None:
        """Dispatch what can start and re-render the tracking comment."""
        await self.redis.enqueue_job("refresh_run", run_id, _queue_name=ORCHESTRATOR_QUEUE)

    async def verify_run(self, run_id: str, round_: int) -> None:
        """Round 1 after the stories, round 2 after a fix story. Each call is a new job: the
        orchestrator enqueues once per round, and again only when a runner died verifying."""
        await self.redis.enqueue_job(
            "verify_run",
            run_id,
            round_,
            _job_id=f"verify:{run_id}:{round_}:{uuid.uuid4().hex[:8]}",
            _queue_name=RUNNER_QUEUE,
        )

    async def review(self, run_id: str, round_: int) -> None:
        """A review round of the integrated branch (on the orchestrator: a read-only agent,
        like planning). Each call is a new job, as with verification."""
        await self.redis.enqueue_job(
            "review_run",
            run_id,
            _job_id=f"review:{run_id}:{round_}:{uuid.uuid4().hex[:8]}",
            _queue_name=ORCHESTRATOR_QUEUE,
        )

    async def run_verified(self, run_id: str, round_: int) -> None:
        await self.redis.enqueue_job(
            "run_verified",
            run_id,
            _job_id=f"verified:{run_id}:{round_}",
            _queue_name=ORCHESTRATOR_QUEUE,
        )

    async def refresh_later(self, run_id: str, delay: float) -> None:
        """One deferred refresh per run at a time (debounced comment edits)."""
        await self.redis.enqueue_job(
            "refresh_run",
            run_id,
            _job_id=f"refresh:{run_id}",
            _defer_by=delay,
            _queue_name=ORCHESTRATOR_QUEUE,
        )

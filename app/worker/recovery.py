"""Every periodic recovery loop of the orchestrator, and the timing it runs on.

arq delivers jobs at least once and processes die at any moment, so the worker looks after
what a dead process dropped, on one cron tick (`reap`, every REAP_EVERY_SECONDS):

- stories whose runner stopped heartbeating (lease expired) are failed as infrastructure
  failures, which re-dispatches them within their budget;
- runs a killed worker left half-way: a plan nobody works on, a queued or ready run that
  never went on, a story failure nobody decided on, verification or the PR never finished;
- runs without progress past the stall limit end as failed, with the reason;
- webhook intakes whose worker died before finishing are queued again (`app.pending`);
- a run waiting for capacity is given another chance to dispatch.

Failed webhook deliveries are redelivered from GitHub on their own cron
(`app.worker.redelivery`), scheduled here too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine
from redis.asyncio import Redis

from app.core.review import review_pending
from app.core.run import Run, now
from app.logs import log_context
from app.pending import LEASE_SCOPE as TRIGGER_LEASE_SCOPE
from app.pending import PendingTriggers, enqueue_intake
from app.settings import Settings
from app.store import RunStore
from app.worker.orchestrator import (
    FINALIZE_LEASE,
    REVIEW_LEASE,
    VERIFY_LEASE,
    Orchestrator,
    needs_verification,
)
from app.worker.redelivery import PASS_TIMEOUT, redeliver_failed

log = logging.getLogger(__name__)

REAP_EVERY_SECONDS = 5
"""The recovery tick: the longest a dropped story, plan or intake waits to be picked up
(plus the idle times below)."""
RUN_RESUME_AFTER_SECONDS = 10.0
"""A run idle this long in a state a live worker would have left already is resumed."""
TRIGGER_RESUME_AFTER_SECONDS = 15.0
"""An intake pending this long, with nobody holding its lease (10 s, renewed while it works),
was dropped by a dead worker and is queued again."""
FINALIZE_RETRY_SECONDS = 15
"""A run stuck finalizing (a PR GitHub refused) is resumed at most this often."""
LEASE_EXPIRED = "the runner stopped responding (lease expired)"
DISPATCH_GRACE_SECONDS = 10.0
"""A story is marked running a moment before its queued lease is set (enqueue first, then
the lease); one without a lease is taken for lost only after this long (a loaded worker
can take seconds between the two), so the reaper does not fail a story being dispatched."""


@dataclass
class Recovery:
    orchestrator: Orchestrator
    store: RunStore
    redis: Redis

    async def reap(self) -> list[str]:
        """One recovery pass over every active run and every pending intake."""
        return await self.reap_runs() + await resume_triggers(self.redis, self.store)

    async def reap_runs(self) -> list[str]:
        """Stories whose lease expired (runner died, job lost) are failed as infrastructure
        failures, which re-dispatches them within their budget. Returns what was reaped."""
        reaped: list[str] = []
        try:
            await self.orchestrator.admit_waiting()  # a wake-up lost with a dead worker
        except Exception:
            log.exception("admitting waiting runs failed; trying again next pass")
        for run in await self.store.active_runs():
            with log_context(run=run.id):
                try:
                    reaped += await self._reap_run(run)
                except Exception:
                    # One run's trouble (GitHub refusing, a corrupt record) must not stop
                    # the reaper from looking after every other run.
                    log.exception("reaping run %s failed; trying again next pass", run.id)
        return reaped

    async def _reap_run(self, run: Run) -> list[str]:
        reaped: list[str] = []
        if await self._stalled(run):
            return [f"{run.id}:stalled"]
        reaped += await self._resume(run)
        if run.state == "running" and self.orchestrator.could_dispatch(run):
            await self.orchestrator.dispatch(run.id)  # what a lost job left undone
        for sid, record in run.stories.items():
            if record.state != "running":
                continue
            since = (now() - (record.started_at or now())).total_seconds()
            if since < DISPATCH_GRACE_SECONDS:
                continue
            if await self.store.lease_holder(run.id, sid) is not None:
                continue
            attempt = record.attempts

            expired: list[bool] = []

            def expire(
                r: Run, sid: str = sid, attempt: int = attempt, expired: list[bool] = expired
            ) -> Run | None:
                expired.clear()
                current = r.stories[sid]
                if current.state != "running" or current.attempts != attempt:
                    return None
                expired.append(True)
                stories = dict(r.stories)
                stories[sid] = current.model_copy(
                    update={
                        "state": "failed",
                        "awaiting_decision": True,
                        "failure_kind": "infrastructure",
                        "failure": LEASE_EXPIRED,
                        "finished_at": now(),
                        "spans": current.ended(now(), "infrastructure"),
                    }
                )
                return r.model_copy(update={"stories": stories})

            await self.store.update(run.id, expire)
            if not expired:
                continue  # it landed or failed in the meantime: nothing was lost
            await self.store.append_event(
                run.id,
                "story_failed",
                story=sid,
                attempt=attempt,
                failure="infrastructure",
                message=LEASE_EXPIRED,
            )
            await self.orchestrator.story_finished(run.id, sid)
            reaped.append(f"{run.id}:{sid}")
        return reaped

    async def _resume(self, run: Run) -> list[str]:
        """Pick up what a killed worker dropped: a plan nobody works on, a ready run that
        never started, a story failure nobody decided on."""
        idle = (now() - run.updated_at).total_seconds()
        resumed: list[str] = []
        if run.state == "planning" and idle > RUN_RESUME_AFTER_SECONDS:
            orphaned = await self.store.lease_holder(run.id, "plan") is None
            if orphaned and await self.store.once(f"replan:{run.id}", 60):
                await self.orchestrator.enqueue_plan(run.id)
                resumed.append(f"{run.id}:replanned")
        # A queued run: the intake's worker died between creating it and queueing its plan.
        queued = run.state == "queued" and idle > RUN_RESUME_AFTER_SECONDS
        if queued and await self.store.once(f"replan:{run.id}", 60):
            await self.orchestrator.enqueue_plan(run.id)
            resumed.append(f"{run.id}:planned")
        if run.state == "ready" and idle > RUN_RESUME_AFTER_SECONDS:
            await self.orchestrator.start(run.id)
            resumed.append(f"{run.id}:started")
        if run.state == "finalizing" and idle > RUN_RESUME_AFTER_SECONDS:
            resumed += await self._resume_finalizing(run)
        for sid, record in run.stories.items():
            waited = (now() - (record.finished_at or now())).total_seconds()
            if record.awaiting_decision and waited > RUN_RESUME_AFTER_SECONDS:
                await self.orchestrator.story_finished(run.id, sid)
                resumed.append(f"{run.id}:{sid}:decided")
        return resumed

    async def _resume_finalizing(self, run: Run) -> list[str]:
        """A runner died verifying, or a worker died between verification and the PR:
        verify again, or go on from the recorded verification (the PR is found, not doubled)."""
        for lease in (VERIFY_LEASE, FINALIZE_LEASE, REVIEW_LEASE):
            if await self.store.lease_holder(run.id, lease) is not None:
                return []
        if not await self.store.once(f"finalize:{run.id}", FINALIZE_RETRY_SECONDS):
            return []
        if review_pending(run):
            await self.orchestrator.queue_review(run)
            return [f"{run.id}:rereview"]
        if needs_verification(run) and not run.verification:
            await self.orchestrator.verify(run)
            return [f"{run.id}:reverify"]
        await self.orchestrator.verified(run.id)
        return [f"{run.id}:finalized"]

    async def _stalled(self, run: Run) -> bool:
        """A run without progress past the stall limit ends as failed, with the reason."""
        idle = (now() - run.updated_at).total_seconds()
        if run.state in ("planned",) or idle < self.orchestrator.settings.run_stall_seconds:
            return False
        reason = f"no progress for {idle / 60:.0f} minutes; baro stopped the run"

        def fail(r: Run) -> Run | None:
            if r.terminal or r.updated_at != run.updated_at:
                return None
            return r.model_copy(update={"state": "failed", "failure": reason})

        failed = await self.store.update(run.id, fail)
        if failed.state != "failed":
            return False
        await self.store.append_event(run.id, "stalled", reason=reason)
        await self.orchestrator.write_tracking(failed)
        return True


async def resume_triggers(redis: Redis, store: RunStore) -> list[str]:
    """Re-enqueue intakes whose worker died (pending, and nobody holds their lease)."""
    resumed: list[str] = []
    triggers = PendingTriggers(redis)
    for delivery in await triggers.stale(TRIGGER_RESUME_AFTER_SECONDS):
        if await store.lease_holder(TRIGGER_LEASE_SCOPE, delivery) is not None:
            continue
        payload = await triggers.resume(delivery)
        if payload is None:
            log.error("gave up on delivery %s: its intake failed too often", delivery)
            continue
        await enqueue_intake(redis, payload, delivery, fresh=True)
        resumed.append(f"trigger:{delivery}")
    return resumed


def recovery_crons(settings: Settings, reap: WorkerCoroutine) -> list[CronJob]:
    """The worker's periodic jobs: the recovery pass (`reap`, the job that runs
    `Recovery.reap`), and redelivery when it is on."""
    jobs = [cron(reap, second=set(range(0, 60, REAP_EVERY_SECONDS)), run_at_startup=True)]
    interval = settings.redelivery_interval_seconds
    if interval > 0:
        tick = max(d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if d <= max(1, interval // 10))
        jobs.append(
            cron(
                redeliver_failed,
                name="redeliver_failed",
                second=set(range(0, 60, tick)),
                run_at_startup=True,
                timeout=PASS_TIMEOUT,
            )
        )
    return jobs

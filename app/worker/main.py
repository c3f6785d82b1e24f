"""The orchestrator process: arq worker on the `baro:orchestrator` queue."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from arq.worker import Retry, Worker, func

from app.core.triggers import Trigger
from app.llm.prices import load_prices
from app.logs import bind_log_context, job_context
from app.pending import LEASE_SCOPE as TRIGGER_LEASE_SCOPE
from app.pending import LEASE_SECONDS as TRIGGER_LEASE_SECONDS
from app.pending import PendingTriggers
from app.queue import IDLE_POLL_SECONDS, ORCHESTRATOR_QUEUE
from app.services import Services, arq_worker, services_of
from app.settings import Settings
from app.worker.engine_planner import EngineFactory
from app.worker.intake import Intake
from app.worker.orchestrator import Orchestrator
from app.worker.planning import Planning
from app.worker.recovery import Recovery, recovery_crons
from app.worker.reviewing import Reviewing

log = logging.getLogger(__name__)

JOB_TIMEOUT = 120
PLAN_TIMEOUT = 1800
PLAN_MAX_TRIES = 3
RETRY_DEFER_SECONDS = 2
REFRESH_MAX_TRIES = 100
"""A progress edit put off for a write backlog comes back this often at most (the next
story event, and the run's conclusion, write the comment anyway)."""
WORKER_MAX_JOBS = 100
"""Jobs at once: much of a job's time is spent waiting (for GitHub's write spacing, for a
model), and with 20 the jobs waiting on one installation's writes held up the scheduling of
every other run (50 runs at once did not finish). Not more: each poll arq re-reads up to
five times this many queued jobs, the running ones included (measured, bench/schedule.py
fair: 200 → 80 s, 100 → 73 s, 60 → 75 s)."""


@dataclass
class WorkerServices(Services):
    """The orchestrator's own parts on top of the shared clients."""

    planning: Planning
    orchestrator: Orchestrator
    reviewing: Reviewing
    recovery: Recovery

    @classmethod
    def build(cls, shared: Services, engines: EngineFactory | None = None) -> WorkerServices:
        jobs, store, settings = shared.jobs, shared.store, shared.settings
        orchestrator = Orchestrator(
            settings,
            shared.gateway,
            store,
            jobs.run_story,
            jobs.verify_run,
            jobs.refresh_later,
            jobs.replan,
            jobs.review,
            jobs.prepare_run,
        )
        return cls(
            **shared.shared(),
            planning=Planning.create(
                settings, shared.gateway, store, shared.http, on_ready=jobs.start, engines=engines
            ),
            orchestrator=orchestrator,
            reviewing=Reviewing(
                settings,
                shared.gateway,
                store,
                shared.http,
                load_prices(settings.prices_file),
                orchestrator.reviewed,
            ),
            recovery=Recovery(orchestrator, store, shared.redis),
        )


def _services(ctx: dict[str, Any]) -> WorkerServices:
    return services_of(ctx, WorkerServices)


@job_context()
async def handle_trigger(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    """Acknowledge a trigger and queue its run (idempotent: arq delivers at least once)."""
    trigger = Trigger.model_validate(payload)
    bind_log_context(
        delivery=trigger.delivery_id,
        installation=trigger.installation_id,
        repo=f"{trigger.owner}/{trigger.repo}",
    )
    services = _services(ctx)
    settings, gateway, jobs, store = (
        services.settings,
        services.gateway,
        services.jobs,
        services.store,
    )
    triggers = PendingTriggers(services.redis)
    if await triggers.is_done(trigger.delivery_id):
        return "already handled"  # arq re-ran an intake that finished
    holder = f"intake:{uuid.uuid4().hex[:12]}"
    lease = (TRIGGER_LEASE_SCOPE, trigger.delivery_id)
    if not await store.acquire_lease(*lease, holder, TRIGGER_LEASE_SECONDS):
        return "being handled by another worker"
    async with (
        store.heartbeat(*lease, holder, TRIGGER_LEASE_SECONDS),
        gateway.installation(trigger.installation_id).session() as gh,
    ):
        intake = Intake(
            gh=gh,
            store=store,
            bot_login=settings.bot_login,
            trigger_label=settings.trigger_label,
            enqueue_plan=jobs.plan,
            enqueue_start=jobs.start,
            refresh=jobs.refresh,
            edit_window=(settings.comment_debounce_seconds, settings.comment_debounce_max_seconds),
        )
        result = await intake.handle(trigger)
    await triggers.finish(trigger.delivery_id)
    log.info(
        "trigger handled",
        extra={"delivery": trigger.delivery_id, "outcome": result.outcome, "run": result.run_id},
    )
    return result.outcome


@job_context(run="run_id")
async def plan_run(ctx: dict[str, Any], run_id: str) -> str:
    """Plan a queued run and post the checklist (idempotent per run state)."""
    planning = _services(ctx).planning
    job_try: int = ctx.get("job_try", 1)
    try:
        outcome = await planning.plan_run(run_id, final_attempt=job_try >= PLAN_MAX_TRIES)
    except Exception as exc:
        log.warning("plan_run %s try %d failed (%s); retrying", run_id, job_try, exc)
        raise Retry(defer=RETRY_DEFER_SECONDS * job_try) from exc
    log.info("plan_run %s: %s", run_id, outcome)
    return outcome


@job_context(run="run_id")
async def start_run(ctx: dict[str, Any], run_id: str) -> str:
    orchestrator = _services(ctx).orchestrator
    return await orchestrator.start(run_id)


@job_context(run="run_id", story="story_id")
async def story_finished(ctx: dict[str, Any], run_id: str, story_id: str) -> str:
    orchestrator = _services(ctx).orchestrator
    return await orchestrator.story_finished(run_id, story_id)


@job_context(run="run_id", story="story_id")
async def story_landing(ctx: dict[str, Any], run_id: str, story_id: str) -> str:
    """A story's agent is done and it is landing: its agent slot is free."""
    orchestrator = _services(ctx).orchestrator
    return await orchestrator.slot_freed(run_id)


@job_context(run="run_id")
async def refresh_run(ctx: dict[str, Any], run_id: str, forced: bool = True) -> str:
    """After a command (`forced`: shown at once), or at the end of a comment's edit window
    or of a write backlog (an edit like any other: it opens the next window)."""
    orchestrator = _services(ctx).orchestrator
    await orchestrator.dispatch(run_id, show=False)
    put_off = await orchestrator.render(await orchestrator.store.get(run_id), force=forced)
    if put_off:  # this job holds the refresh's job id: it comes back itself
        raise Retry(defer=put_off)
    return "refreshed"


@job_context(run="run_id")
async def run_verified(ctx: dict[str, Any], run_id: str) -> str:
    orchestrator = _services(ctx).orchestrator
    return await orchestrator.verified(run_id)


@job_context(run="run_id")
async def review_run(ctx: dict[str, Any], run_id: str) -> str:
    """Review the integrated branch against the plan (idempotent per recorded round)."""
    return await _services(ctx).reviewing.review_run(run_id)


async def reap(ctx: dict[str, Any]) -> int:
    """Cron: one recovery pass (see `app.worker.recovery`)."""
    reaped = await _services(ctx).recovery.reap()
    if reaped:
        log.warning("reaped stories with expired leases: %s", ", ".join(reaped))
    return len(reaped)


def build_worker(
    settings: Settings, engines: EngineFactory | None = None, **overrides: Any
) -> Worker:
    """`engines` lets the planner run on an agent CLI (the composition root builds it)."""

    async def start(shared: Services) -> Services:
        return WorkerServices.build(shared, engines)

    options: dict[str, Any] = {
        "job_timeout": JOB_TIMEOUT,
        "job_completion_wait": 20,
        "max_tries": 5,
        "keep_result": 3600,
        "max_jobs": WORKER_MAX_JOBS,
        "poll_delay": 0.02,
        "idle_poll": IDLE_POLL_SECONDS,
        **overrides,
    }
    return arq_worker(
        settings,
        queue=ORCHESTRATOR_QUEUE,
        functions=[
            func(handle_trigger, name="handle_trigger", max_tries=5),
            func(plan_run, name="plan_run", max_tries=PLAN_MAX_TRIES, timeout=PLAN_TIMEOUT),
            func(start_run, name="start_run"),
            func(story_finished, name="story_finished"),
            func(story_landing, name="story_landing"),
            func(refresh_run, name="refresh_run", keep_result=0, max_tries=REFRESH_MAX_TRIES),
            func(run_verified, name="run_verified"),
            func(review_run, name="review_run", max_tries=3, timeout=PLAN_TIMEOUT),
        ],
        cron_jobs=recovery_crons(settings, reap),
        start=start,
        **options,
    )

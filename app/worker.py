"""The orchestrator process: arq worker on the `baro:orchestrator` queue."""

from __future__ import annotations

import logging
from typing import Any

from arq.worker import Worker, func
from githubkit.cache import AsyncRedisCacheStrategy

from app.github import GitHubGateway
from app.intake import Intake
from app.queue import ORCHESTRATOR_QUEUE, connect, deserialize, redis_settings, serialize
from app.runs.store import RunStore
from app.settings import Settings
from app.webhooks import Trigger

log = logging.getLogger(__name__)

JOB_TIMEOUT = 120
HEALTH_CHECK_INTERVAL = 10


async def handle_trigger(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    """Acknowledge a trigger and queue its run (idempotent: arq delivers at least once)."""
    trigger = Trigger.model_validate(payload)
    settings: Settings = ctx["settings"]
    gateway: GitHubGateway = ctx["gateway"]
    intake = Intake(
        gh=gateway.installation(trigger.installation_id),
        store=ctx["store"],
        bot_login=settings.bot_login,
        trigger_label=settings.trigger_label,
    )
    result = await intake.handle(trigger)
    log.info(
        "trigger handled",
        extra={"delivery": trigger.delivery_id, "outcome": result.outcome, "run": result.run_id},
    )
    return result.outcome


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    redis = connect(settings.redis_url)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["redis"] = redis
        ctx["store"] = RunStore(redis)
        ctx["gateway"] = GitHubGateway(
            settings, AsyncRedisCacheStrategy(redis, prefix="baro:githubkit")
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        await redis.aclose()

    options: dict[str, Any] = {
        "functions": [func(handle_trigger, name="handle_trigger", max_tries=5)],
        "queue_name": ORCHESTRATOR_QUEUE,
        "redis_settings": redis_settings(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "job_timeout": JOB_TIMEOUT,
        "job_completion_wait": 20,
        "max_tries": 5,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "keep_result": 3600,
        "max_jobs": 20,
        "poll_delay": 0.1,
    }
    options.update(overrides)
    return Worker(**options)

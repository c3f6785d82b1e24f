"""The runner process: arq worker on the `baro:runner` queue.

Story execution arrives with the runners issue; for now the queue answers a liveness job so
that operators can deploy and scale the process group.
"""

from __future__ import annotations

from typing import Any

from arq.worker import Worker, func

from app.queue import RUNNER_QUEUE, deserialize, redis_settings, serialize
from app.settings import Settings


async def runner_ping(ctx: dict[str, Any]) -> str:
    return "pong"


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    options: dict[str, Any] = {
        "functions": [func(runner_ping, name="runner_ping")],
        "queue_name": RUNNER_QUEUE,
        "redis_settings": redis_settings(settings.redis_url),
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "job_timeout": 60,
        "health_check_interval": 10,
        "poll_delay": 0.2,
    }
    options.update(overrides)
    return Worker(**options)

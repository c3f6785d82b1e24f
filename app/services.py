"""The clients every process shares, made once, and the one way both arq workers are built.

A process opens `Services` (Redis, the run store with its metrics, the GitHub gateway, an
HTTP client for the models, the job queue) at start-up; the orchestrator and the runner each
extend it with their own parts and keep that one typed object in arq's `ctx`, so a job reads
`services_of(ctx, WorkerServices).orchestrator` instead of fishing string keys out of a dict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import anyio.lowlevel
import httpx
from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.worker import Function, Worker
from githubkit.cache import AsyncRedisCacheStrategy

from app import keys
from app.github import GitHubGateway
from app.jobs import Jobs
from app.metrics import Metrics
from app.queue import HEALTH_CHECK_INTERVAL, connect, deserialize, redis_settings, serialize
from app.settings import Settings
from app.store import RunStore
from app.wake import WakingWorker

SERVICES = "services"
"""The one key baro puts in arq's ctx."""
MODEL_TIMEOUT = httpx.Timeout(600, connect=10)


@dataclass
class Services:
    settings: Settings
    redis: ArqRedis
    metrics: Metrics
    store: RunStore
    gateway: GitHubGateway
    http: httpx.AsyncClient
    jobs: Jobs

    @classmethod
    def open(cls, settings: Settings, redis: ArqRedis) -> Services:
        metrics = Metrics(redis)
        cache = AsyncRedisCacheStrategy(redis, prefix=keys.GITHUB_CACHE_PREFIX)
        return cls(
            settings=settings,
            redis=redis,
            metrics=metrics,
            store=RunStore(redis, metrics),
            gateway=GitHubGateway(settings, cache, metrics),
            http=httpx.AsyncClient(timeout=MODEL_TIMEOUT),
            jobs=Jobs(redis),
        )

    def shared(self) -> dict[str, Any]:
        """The shared fields, to build a process's own services object from."""
        return {f.name: getattr(self, f.name) for f in fields(Services)}

    async def close(self) -> None:
        """Called once on shutdown; a process closes what it added first."""
        await self.http.aclose()


S = TypeVar("S", bound=Services)


def services_of(ctx: dict[str, Any], kind: type[S]) -> S:
    """The process's services from an arq job's ctx, typed."""
    found = ctx.get(SERVICES)
    if not isinstance(found, kind):
        raise RuntimeError(f"arq ctx holds no {kind.__name__} (was the worker started?)")
    return found


async def warm_up() -> None:
    """httpx's first request in a process imports anyio's event-loop backend (40-100 ms,
    measured): done at start-up, not inside the first story's model call or token mint."""
    await anyio.lowlevel.checkpoint()


def arq_worker(
    settings: Settings,
    *,
    queue: str,
    functions: Sequence[Function],
    start: Callable[[Services], Awaitable[Services]],
    cron_jobs: Sequence[CronJob] = (),
    worker_class: type[WakingWorker] = WakingWorker,
    **options: Any,
) -> Worker:
    """An arq Worker with baro's shared options: JSON jobs (never pickle), explicit
    heartbeats, the shared clients opened at start-up and closed at shutdown. `start` turns
    the shared services into the process's own; `options` are the process's own settings."""
    redis = connect(settings.redis_url)

    async def startup(ctx: dict[str, Any]) -> None:
        await warm_up()
        ctx[SERVICES] = await start(Services.open(settings, redis))

    async def shutdown(ctx: dict[str, Any]) -> None:
        services = ctx.get(SERVICES)
        if isinstance(services, Services):
            await services.close()
        await redis.aclose()

    merged: dict[str, Any] = {
        "functions": list(functions),
        "cron_jobs": list(cron_jobs),
        "queue_name": queue,
        "redis_settings": redis_settings(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    merged.update(options)
    return worker_class(**merged)


__all__ = ["SERVICES", "Services", "arq_worker", "services_of"]

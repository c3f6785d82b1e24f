"""arq plumbing shared by the web, worker and runner processes.

Jobs are JSON, never pickle, so that write access to Redis is not code execution.
"""

from __future__ import annotations

import json
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import ConnectionPool

from app import keys
from app.wake import WakingRedis

ORCHESTRATOR_QUEUE = keys.ORCHESTRATOR_QUEUE
HEALTH_CHECK_INTERVAL = 10
"""Seconds between arq heartbeats of the worker and runner processes (read by /healthz)."""
RUNNER_QUEUE = keys.RUNNER_QUEUE
IDLE_POLL_SECONDS = 0.5
"""How often a worker or runner polls its queue when no enqueue woke it (`app.wake`): what
deferred jobs and cron ticks wait at most. `poll_delay` (0.02 s) is the least time between
two polls however often it is woken."""


def serialize(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def deserialize(data: bytes) -> Any:
    return json.loads(data)


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 5
    return settings


def connect(url: str, *, timeout: float = 2.0) -> ArqRedis:
    """An ArqRedis that connects lazily, so a process starts while Redis is down, and whose
    enqueues wake the queue's workers (`app.wake`)."""
    pool = ConnectionPool.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, health_check_interval=30
    )
    return WakingRedis(
        pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=ORCHESTRATOR_QUEUE,
    )

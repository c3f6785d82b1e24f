"""The runner process: arq worker on the `baro:runner` queue, executing stories.

At start-up it proves that the sandbox confines commands and refuses to start otherwise;
`BARO_SANDBOX=none` is an explicit, loudly logged opt-out for trusted local development.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
from arq.worker import Worker, func
from githubkit.cache import AsyncRedisCacheStrategy

from app.github import GitHubGateway
from app.jobs import Jobs
from app.llm.prices import load_prices
from app.logs import job_context
from app.metrics import (
    PRESENCE_CTX,
    Metrics,
    RunnerPresence,
    presence_job_end,
    presence_job_start,
)
from app.queue import (
    HEALTH_CHECK_INTERVAL,
    RUNNER_QUEUE,
    connect,
    deserialize,
    redis_settings,
    serialize,
)
from app.runs.store import RunStore
from app.settings import Settings
from runner.housekeeping import sweep
from runner.limits import MiB
from runner.sandbox import SandboxPolicy, SandboxUnavailable, make_sandbox
from runner.story import StoryRunner
from runner.workspace import Workspaces

log = logging.getLogger(__name__)

STORY_TIMEOUT = 2 * 3600
HOUSEKEEPING_EVERY_SECONDS = 600.0


async def runner_ping(ctx: dict[str, Any]) -> str:
    return "pong"


@job_context(run="run_id", story="story_id", attempt="attempt")
async def run_story(ctx: dict[str, Any], run_id: str, story_id: str, attempt: int) -> str:
    """Execute one story attempt (idempotent: stale or landed attempts are no-ops)."""
    runner: StoryRunner = ctx["story_runner"]
    outcome = await runner.run_story(run_id, story_id, attempt)
    log.info("run_story %s/%s attempt %d: %s", run_id, story_id, attempt, outcome)
    return outcome


@job_context(run="run_id")
async def verify_run(ctx: dict[str, Any], run_id: str, round_: int = 1) -> str:
    """Verify the integrated run branch before the PR opens."""
    runner: StoryRunner = ctx["story_runner"]
    return await runner.verify_run(run_id, round_)


async def housekeeping(settings: Settings, workspaces: Workspaces) -> None:
    """Free the disk that dead runners, unused checkouts and idle mirrors hold, now and
    every few minutes. In-process, not an arq cron: a queued job could run on another
    machine, and each machine must sweep its own data directory."""
    while True:
        try:
            await workspaces.trim_idle()
            await asyncio.to_thread(
                sweep, settings.runner_data_dir, max_idle_seconds=settings.mirror_idle_days * 86400
            )
        except Exception:
            log.exception("housekeeping of %s failed; trying again later", settings.runner_data_dir)
        await asyncio.sleep(HOUSEKEEPING_EVERY_SECONDS)


def sandbox_policy(settings: Settings) -> SandboxPolicy:
    """Hide what a sandboxed command must never see (other repositories, the App's key) and
    cap what one command may use together (memory, worktree growth)."""
    hidden: list[Path] = [settings.runner_data_dir / "mirrors"]
    if settings.github_private_key_file is not None:
        hidden.append(settings.github_private_key_file.resolve())
    if settings.config is not None:
        hidden.append(settings.config.resolve())
    return SandboxPolicy(
        hidden_paths=tuple(hidden),
        bwrap_path=settings.bwrap_path,
        cgroup=settings.sandbox_cgroup,
        memory_total_bytes=settings.sandbox_memory_mib * MiB,
        write_limit_bytes=settings.sandbox_write_mib * MiB,
    )


class RunnerStartupError(RuntimeError):
    pass


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    redis = connect(settings.redis_url)
    runner_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def startup(ctx: dict[str, Any]) -> None:
        data_dir = settings.runner_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "mirrors").mkdir(exist_ok=True)
        (data_dir / "worktrees").mkdir(exist_ok=True)
        data_dir.chmod(0o711)
        (data_dir / "mirrors").chmod(0o700)
        (data_dir / "worktrees").chmod(0o711)
        workspaces = Workspaces(data_dir, owner=runner_id)
        ctx["workspaces"] = workspaces
        sandbox = make_sandbox(settings.sandbox, sandbox_policy(settings))
        try:
            await sandbox.self_check(workspaces.owner.acquire())
        except SandboxUnavailable as exc:
            raise RunnerStartupError(
                f"the sandbox does not work here, refusing to run stories: {exc}"
            ) from exc
        http = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10))
        jobs = Jobs(redis)
        metrics = Metrics(redis)
        ctx["http"] = http
        ctx["story_runner"] = StoryRunner(
            settings=settings,
            store=RunStore(redis, metrics),
            gateway=GitHubGateway(
                settings, AsyncRedisCacheStrategy(redis, prefix="baro:githubkit"), metrics
            ),
            workspaces=workspaces,
            sandbox=sandbox,
            http=http,
            prices=load_prices(settings.prices_file),
            notify=jobs.story_finished,
            runner_id=runner_id,
            verified=jobs.run_verified,
        )
        presence = RunnerPresence(
            metrics, runner_id, settings.runner_concurrency, HEALTH_CHECK_INTERVAL
        )
        await presence.start()
        ctx[PRESENCE_CTX] = presence
        ctx["housekeeping"] = asyncio.create_task(housekeeping(settings, workspaces))
        log.info("runner %s ready (sandbox: %s)", runner_id, settings.sandbox)

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "http" in ctx:
            await ctx["http"].aclose()
        if PRESENCE_CTX in ctx:
            await ctx[PRESENCE_CTX].stop()
        if "housekeeping" in ctx:
            ctx["housekeeping"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ctx["housekeeping"]
        if "workspaces" in ctx:
            ctx["workspaces"].close()
        await redis.aclose()

    options: dict[str, Any] = {
        "functions": [
            func(runner_ping, name="runner_ping"),
            func(run_story, name="run_story", timeout=STORY_TIMEOUT, max_tries=3),
            func(verify_run, name="verify_run", timeout=STORY_TIMEOUT, max_tries=3),
        ],
        "queue_name": RUNNER_QUEUE,
        "redis_settings": redis_settings(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "on_job_start": presence_job_start,
        "on_job_end": presence_job_end,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "job_timeout": STORY_TIMEOUT,
        "job_completion_wait": 30,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "max_jobs": settings.runner_concurrency,
        "poll_delay": 0.05,
    }
    options.update(overrides)
    return Worker(**options)

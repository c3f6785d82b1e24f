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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arq.worker import Worker, func

from app.llm.prices import load_prices
from app.logs import job_context
from app.queue import HEALTH_CHECK_INTERVAL, IDLE_POLL_SECONDS, RUNNER_QUEUE
from app.services import SERVICES, Services, arq_worker, services_of
from app.settings import Settings
from app.warmup import WarmUps
from runner.environment import Environments
from runner.housekeeping import sweep
from runner.images import ImageStore
from runner.limits import MiB
from runner.prepare import Preparation
from runner.presence import RunnerPresence
from runner.sandbox import SandboxPolicy, SandboxUnavailable, make_sandbox
from runner.setup import Setups
from runner.slots import AgentSlots, RunnerWorker
from runner.story import StoryRunner
from runner.workspace import Workspaces

log = logging.getLogger(__name__)

STORY_TIMEOUT = 2 * 3600
PREPARE_TIMEOUT = 3600
"""An image pull and `setup:` (each command has its own 15-minute limit); also how long arq
waits before it runs again a preparation whose runner died."""
HOUSEKEEPING_EVERY_SECONDS = 600.0
SETUP_IDLE_SECONDS = 6 * 3600.0
"""A setup result nobody linked for this long goes (a run's stories use it within hours)."""


@dataclass
class RunnerServices(Services):
    """The runner's own parts on top of the shared clients."""

    workspaces: Workspaces
    images: ImageStore
    preparation: Preparation
    story_runner: StoryRunner
    presence: RunnerPresence
    warmups: WarmUps
    housekeeping: asyncio.Task[None]

    async def close(self) -> None:
        await self.warmups.stop()
        await self.presence.stop()
        self.housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.housekeeping
        self.workspaces.close()
        await super().close()


async def runner_ping(ctx: dict[str, Any]) -> str:
    return "pong"


@job_context(run="run_id", story="story_id", attempt="attempt")
async def run_story(ctx: dict[str, Any], run_id: str, story_id: str, attempt: int) -> str:
    """Execute one story attempt (idempotent: stale or landed attempts are no-ops)."""
    runner = services_of(ctx, RunnerServices).story_runner
    outcome = await runner.run_story(run_id, story_id, attempt)
    log.info("run_story %s/%s attempt %d: %s", run_id, story_id, attempt, outcome)
    return outcome


@job_context(run="run_id")
async def prepare_run(ctx: dict[str, Any], run_id: str, generation: int) -> str:
    """Pull the run's image and run its `setup:` before any story starts."""
    preparation = services_of(ctx, RunnerServices).preparation
    outcome = await preparation.prepare_run(run_id, generation)
    log.info("prepare_run %s (generation %d): %s", run_id, generation, outcome)
    return outcome


@job_context(run="run_id")
async def verify_run(ctx: dict[str, Any], run_id: str, round_: int = 1) -> str:
    """Verify the integrated run branch before the PR opens."""
    runner = services_of(ctx, RunnerServices).story_runner
    return await runner.verify_run(run_id, round_)


async def job_started(ctx: dict[str, Any]) -> None:
    """arq `on_job_start`: one more busy slot in the runner's presence."""
    services = ctx.get(SERVICES)
    if isinstance(services, RunnerServices):
        await services.presence.job_started()


async def job_ended(ctx: dict[str, Any]) -> None:
    services = ctx.get(SERVICES)
    if isinstance(services, RunnerServices):
        await services.presence.job_ended()


async def housekeeping(
    settings: Settings, workspaces: Workspaces, images: ImageStore, setups: Setups | None = None
) -> None:
    """Free the disk that dead runners, unused checkouts, idle mirrors and images hold, now
    and every few minutes. In-process, not an arq cron: a queued job could run on another
    machine, and each machine must sweep its own data directory."""
    while True:
        try:
            await workspaces.trim_idle()
            await asyncio.to_thread(
                sweep, settings.runner_data_dir, max_idle_seconds=settings.mirror_idle_days * 86400
            )
            await asyncio.to_thread(images.sweep)
            if setups is not None:
                await asyncio.to_thread(setups.sweep, SETUP_IDLE_SECONDS)
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


def prepare_data_dir(data_dir: Path) -> None:
    """Mirrors only for the runner; worktrees searchable by the sandbox uid."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "mirrors").mkdir(exist_ok=True)
    (data_dir / "worktrees").mkdir(exist_ok=True)
    data_dir.chmod(0o711)
    (data_dir / "mirrors").chmod(0o700)
    (data_dir / "worktrees").chmod(0o711)


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    runner_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    agent_slots = AgentSlots(settings.runner_concurrency)

    async def start(shared: Services) -> Services:
        prepare_data_dir(settings.runner_data_dir)
        workspaces = Workspaces(settings.runner_data_dir, owner=runner_id)
        try:
            images = ImageStore.from_settings(settings)
        except ValueError as exc:
            workspaces.close()
            raise RunnerStartupError(f"image settings: {exc}") from None
        sandbox = make_sandbox(settings.sandbox, sandbox_policy(settings))
        try:
            await sandbox.self_check(workspaces.owner.acquire())
        except SandboxUnavailable as exc:
            workspaces.close()
            raise RunnerStartupError(
                f"the sandbox does not work here, refusing to run stories: {exc}"
            ) from exc
        setups = Setups(settings.runner_data_dir)
        preparation = Preparation(
            store=shared.store,
            workspaces=workspaces,
            environments=Environments(settings.runner_data_dir, images),
            setups=setups,
            sandbox=sandbox,
            access=lambda run: story_runner.access(run),
            refresh=shared.jobs.refresh,
            runner_id=runner_id,
        )
        story_runner = StoryRunner(
            settings=settings,
            store=shared.store,
            gateway=shared.gateway,
            workspaces=workspaces,
            sandbox=sandbox,
            http=shared.http,
            prices=load_prices(settings.prices_file),
            notify=shared.jobs.story_finished,
            landing=shared.jobs.story_landing,
            slots=agent_slots,
            runner_id=runner_id,
            verified=shared.jobs.run_verified,
            preparation=preparation,
        )
        presence = RunnerPresence(
            shared.metrics,
            runner_id,
            settings.runner_concurrency,
            HEALTH_CHECK_INTERVAL,
            landing=lambda: agent_slots.landing,
        )
        await presence.start()
        warmups = WarmUps(shared.redis, story_runner.warm)
        warmups.start()
        log.info("runner %s ready (sandbox: %s)", runner_id, settings.sandbox)
        return RunnerServices(
            **shared.shared(),
            workspaces=workspaces,
            images=images,
            preparation=preparation,
            story_runner=story_runner,
            presence=presence,
            warmups=warmups,
            housekeeping=asyncio.create_task(housekeeping(settings, workspaces, images, setups)),
        )

    options: dict[str, Any] = {
        "on_job_start": job_started,
        "on_job_end": job_ended,
        "job_timeout": STORY_TIMEOUT,
        "job_completion_wait": 30,
        "poll_delay": 0.02,
        "idle_poll": IDLE_POLL_SECONDS,
        **overrides,
    }
    return arq_worker(
        settings,
        queue=RUNNER_QUEUE,
        functions=[
            func(runner_ping, name="runner_ping"),
            func(run_story, name="run_story", timeout=STORY_TIMEOUT, max_tries=3),
            func(verify_run, name="verify_run", timeout=STORY_TIMEOUT, max_tries=3),
            func(prepare_run, name="prepare_run", timeout=PREPARE_TIMEOUT, max_tries=3),
        ],
        start=start,
        worker_class=RunnerWorker,
        agent_slots=agent_slots,
        **options,
    )

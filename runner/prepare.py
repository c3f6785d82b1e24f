"""A run's environment made ready before its first story, and given to each worktree.

`prepare_run` (a runner job the orchestrator enqueues before dispatching any story of a run
with an image or `setup:`) pulls the image, runs `setup:` once on the base commit and
records the outcome on the run: `ready` with the image digest every story then uses, or
`failed` with the reason (a bad name, a missing tag, an unreachable registry, refused
credentials, an image without a shell, a failed setup command and its output's tail). The
orchestrator ends a failed run with that message; nothing else was started, so `/baro
retry` simply prepares again.

`provide` gives a story's (or the final verification's) worktree the setup result, made on
this machine if it is not here yet, and runs setup again in place when the worktree's lock
files differ from the base commit's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from app.core.run import Run
from app.gitcmd import GitAuth, GitError
from app.store import RunStore
from runner.environment import Environments, RunEnvironment
from runner.images import ImageError
from runner.mirror import RepoRef
from runner.sandbox import NoSandbox, Sandbox
from runner.setup import (
    Provided,
    SetupFailed,
    SetupResult,
    Setups,
    redo_if_locks_changed,
    setup_key,
)
from runner.workspace import Workspaces
from runner.worktree import Worktree, reset_to

log = logging.getLogger(__name__)

PREPARE_LEASE = "prepare"
PREPARE_LEASE_SECONDS = 60.0
Access = Callable[[Run], Awaitable[tuple[RepoRef, GitAuth]]]


@dataclass
class Preparation:
    store: RunStore
    workspaces: Workspaces
    environments: Environments
    setups: Setups
    sandbox: Sandbox | NoSandbox
    access: Access
    refresh: Callable[[str], Awaitable[None]]
    """The orchestrator's refresh: dispatches the stories, or ends a failed run."""
    runner_id: str

    async def prepare_run(self, run_id: str, generation: int) -> str:
        run = await self.store.find(run_id)
        env = run.environment if run is not None else None
        if run is None or env is None or run.state != "running":
            return "skipped"
        if env.generation != generation or env.state != "pending":
            return f"skipped (environment {env.state}, generation {env.generation})"
        holder = f"{self.runner_id}:prepare:{uuid.uuid4().hex[:6]}"
        if not await self.store.claim_lease(
            run_id, PREPARE_LEASE, "", holder, PREPARE_LEASE_SECONDS
        ):
            return "being prepared by another runner"
        async with self.store.heartbeat(run_id, PREPARE_LEASE, holder, PREPARE_LEASE_SECONDS):
            update = await self._prepare(run)
        generation_now = generation

        def record(r: Run) -> Run | None:
            current = r.environment
            if current is None or current.generation != generation_now:
                return None
            if current.state != "pending":
                return None
            return r.model_copy(update={"environment": current.model_copy(update=update)})

        await self.store.update(run_id, record)
        await self.store.append_event(
            run_id, "environment", state=update["state"], error=update.get("error")
        )
        await self.refresh(run_id)
        return str(update["state"])

    async def _prepare(self, run: Run) -> dict[str, object]:
        try:
            async with self.environments.use(run) as renv:
                setup = run.repo_config.setup if run.repo_config else []
                seconds = None
                if setup:
                    repo, auth = await self.access(run)
                    result = await self._made(run, renv, repo, auth)
                    seconds = result.seconds
                return {"state": "ready", "digest": renv.digest, "setup_seconds": seconds}
        except ImageError as exc:
            log.warning("run %s: image %s: %s", run.id, run.environment, exc)
            return {"state": "failed", "error": str(exc), "error_kind": exc.kind}
        except SetupFailed as exc:
            return {
                "state": "failed",
                "error": str(exc),
                "error_kind": "setup",
                "output_tail": exc.tail,
            }
        except GitError as exc:
            return {"state": "failed", "error": f"git: {exc}"[:500], "error_kind": "git"}

    async def _made(
        self, run: Run, renv: RunEnvironment, repo: RepoRef, auth: GitAuth
    ) -> SetupResult:
        """The setup result of the run's base commit on this machine (made if missing)."""
        assert run.branch is not None and run.base_sha is not None
        setup = run.repo_config.setup if run.repo_config else []
        key = setup_key(repo.full_name, run.base_sha, setup, renv.digest)
        found = self.setups.find(key)
        if found is not None:
            return found
        async with self.workspaces.worktree(
            repo, run.branch, auth, run_id=run.id, story_id="setup", attempt=1
        ) as wt:
            await reset_to(wt, run.base_sha)
            return await self.setups.ensure(
                key, wt.path, setup, renv.sandbox(self.sandbox, setup=True), renv.name
            )

    async def provide(
        self, run: Run, renv: RunEnvironment, wt: Worktree, auth: GitAuth
    ) -> Provided:
        """The base commit's setup result linked into `wt` (made on this machine if it is
        not here yet; raises `SetupFailed`); its paths are never part of a commit."""
        setup = run.repo_config.setup if run.repo_config else []
        if not setup:
            return Provided()
        result = await self._made(run, renv, wt.repo, auth)
        provided = await self.setups.link_into(result, wt.path)
        wt.excludes = tuple(f"/{p}" for p in provided.paths)
        return provided

    async def redo(
        self, run: Run, renv: RunEnvironment, wt: Worktree, auth: GitAuth, provided: Provided
    ) -> bool:
        """Setup again in `wt` if its lock files moved since its dependencies were made
        (True if it ran); raises `SetupFailed`. A worktree that lost the result (landing
        rewrites the checkout after a rebase) gets it linked again first."""
        setup = run.repo_config.setup if run.repo_config else []
        if not setup:
            return False
        exists = [await asyncio.to_thread(os.path.lexists, wt.path / p) for p in provided.paths]
        if not all(exists):
            result = await self._made(run, renv, wt.repo, auth)
            again = await self.setups.link_into(result, wt.path)
            provided.locks = again.locks
        return await redo_if_locks_changed(
            provided, wt.path, setup, renv.sandbox(self.sandbox, setup=True), renv.name
        )

    @contextlib.asynccontextmanager
    async def environment(self, run: Run) -> AsyncIterator[RunEnvironment]:
        async with self.environments.use(run) as renv:
            yield renv


__all__ = ["PREPARE_LEASE", "Preparation"]

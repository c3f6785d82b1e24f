"""The orchestrator's `plan_run` job: clone, read config, plan, post the checklist.

Runs on a fresh shallow clone of the default branch, fetched with a read-only token narrowed
to the repository. Every way it can end is written to the run and to the tracking comment:
a plan (waiting for approval or ready to execute) or a failure that says what to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.core.environment import DEVCONTAINER_PATHS, choose_environment
from app.core.plan import RunState
from app.core.report import environment_lines, render_failed, render_plan
from app.core.routing import RepoConfig, RepoConfigError, parse_repo_config
from app.core.run import Run, RunEnvironment, StoryRecord, branch_name
from app.gitcmd import GitAuth, GitError, read_remote_file, run_git, shallow_clone
from app.github import GitHubGateway, InstallationClient
from app.llm.catalog import ModelCatalog
from app.llm.client import ModelClient
from app.llm.config import ModelConfig, engine_model_label
from app.llm.meter import turn_pricer
from app.llm.prices import PriceTable, load_prices
from app.run_links import RunLinks
from app.settings import Settings
from app.store import RunStore
from app.warmup import WarmUp, announce
from app.worker.engine_planner import EngineFactory, make_plan_on_engine
from app.worker.phase_models import ModelUnavailable, phase_client
from app.worker.planner import (
    PlannerBudget,
    PlannerFailed,
    PlannerOutcome,
    PlanRequest,
    make_plan,
)
from app.worker.repo_tools import ReadOnlyRepo

log = logging.getLogger(__name__)

REPO_CONFIG_PATH = ".github/baro.yml"
CONFIG_LIMIT = 100_000
AGENT_DOCS = ("AGENTS.md", "CLAUDE.md", "README.md")
RETRY_HINT = "Comment `/baro plan` to try again."
PLAN_LEASE = "plan"
PLAN_LEASE_SECONDS = 30.0


class RunFailed(Exception):
    """Planning cannot go on; `reason` and `details` are shown in the tracking comment."""

    def __init__(self, reason: str, details: list[str] | None = None, next_step: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or []
        self.next_step = next_step or RETRY_HINT


@dataclass
class Planning:
    settings: Settings
    gateway: GitHubGateway
    store: RunStore
    http: httpx.AsyncClient
    prices: PriceTable
    on_ready: Callable[[str], Awaitable[None]]
    engines: EngineFactory | None = None
    """How to plan on an agent CLI (from the composition root); None: baro's loop only."""

    @classmethod
    def create(
        cls,
        settings: Settings,
        gateway: GitHubGateway,
        store: RunStore,
        http: httpx.AsyncClient,
        *,
        on_ready: Callable[[str], Awaitable[None]],
        engines: EngineFactory | None = None,
    ) -> Planning:
        prices = load_prices(settings.prices_file)
        return cls(settings, gateway, store, http, prices, on_ready, engines)

    async def plan_run(self, run_id: str, *, final_attempt: bool = True) -> str:
        """Plan one run. An unexpected error is re-raised for arq to retry, except on the
        final attempt, where the run fails with a comment instead of hanging in planning."""
        run = await self.store.get(run_id)
        if run.state not in ("queued", "planning"):
            return f"skipped ({run.state})"
        holder = f"planner:{uuid.uuid4().hex[:12]}"
        if not await self.store.claim_lease(run_id, PLAN_LEASE, "", holder, PLAN_LEASE_SECONDS):
            return "being planned by another worker"
        async with self.store.heartbeat(run_id, PLAN_LEASE, holder, PLAN_LEASE_SECONDS):
            return await self._plan_leased(run_id, final_attempt)

    async def _plan_leased(self, run_id: str, final_attempt: bool) -> str:
        run = await self.store.update(run_id, _to_planning)
        if run.state != "planning":
            return f"skipped ({run.state})"
        await self.store.append_event(run_id, "planning")
        async with self.gateway.installation(run.installation_id).session() as gh:
            try:
                return await self._plan(run, gh)
            except RunFailed as failure:
                await self._fail(run, gh, failure)
                return "failed"
            except Exception as exc:
                if not final_attempt:
                    raise
                log.exception("planning run %s failed unexpectedly", run_id)
                unexpected = RunFailed(
                    f"baro hit an unexpected error while planning ({type(exc).__name__})",
                    next_step="This is likely temporary. " + RETRY_HINT,
                )
                await self._fail(run, gh, unexpected)
                return "failed"

    async def _create_branch(
        self, run: Run, gh: InstallationClient, checkout: Path, branch: str, sha: str
    ) -> bool:
        """The run branch at `sha`, pushed from the planner's clone (which holds the commit,
        so nothing is uploaded): a git push, not one of the installation's spaced REST writes,
        which the run's pull request would otherwise wait behind. The lease with an empty
        value creates the branch only where there is none. Anything else (a push refused,
        the branch there already) is settled by the REST call: False when it exists."""
        try:
            token = await self.gateway.repo_token(
                run.installation_id, run.repo, {"contents": "write", "metadata": "read"}
            )
            ref = f"refs/heads/{branch}"
            lease = f"--force-with-lease={ref}:"
            push = ["push", "--quiet", "--no-verify", lease, "origin", f"{sha}:{ref}"]
            await run_git(push, cwd=checkout, auth=GitAuth(token))
            return True
        except Exception as exc:  # the REST call below knows whether it exists
            log.info("run %s: branch %s not pushed (%s); asking the API", run.id, branch, exc)
        return await gh.ensure_branch(run.owner, run.repo, branch, sha)

    async def _plan(self, run: Run, gh: InstallationClient) -> str:
        repository = await gh.repository(run.owner, run.repo)
        issue = await gh.issue(run.owner, run.repo, run.issue_number)
        # Before any model is paid: a follow-up on this issue's PR may be using the branch.
        branch = run.pr_branch or branch_name(run.issue_number, issue.title)
        holder = await self.store.claim_branch(run.owner, run.repo, branch, run.id)
        if holder != run.id:
            raise RunFailed(
                f"another baro run ({holder}) is still adding commits to the branch {branch}",
                next_step="Comment `/baro` again when it has finished.",
            )
        token = await self.gateway.repo_token(
            run.installation_id, run.repo, {"contents": "read", "metadata": "read"}
        )
        with tempfile.TemporaryDirectory(prefix="baro-plan-") as tmp:
            checkout = Path(tmp) / "repo"
            # A follow-up plans on the PR's branch; settings always come from the default
            # branch, which only the repository's writers change (never a story agent).
            source = run.pr_branch or repository.default_branch
            auth = GitAuth(token)
            try:
                await shallow_clone(repository.clone_url, checkout, auth, source)
                base_sha = (await run_git(["rev-parse", "HEAD"], cwd=checkout)).strip()
                await announce(self.store.redis, WarmUp(run_id=run.id, branch=source, sha=base_sha))
                repo = ReadOnlyRepo(checkout)

                async def default_branch_file(path: str) -> str | None:
                    if run.pr_branch:
                        return await read_remote_file(
                            checkout, auth, repository.default_branch, path, CONFIG_LIMIT
                        )
                    return repo.read_optional(path, CONFIG_LIMIT)

                config_text = await default_branch_file(REPO_CONFIG_PATH)
                config = self._repo_config(config_text)
                environment = await _environment(config, default_branch_file)
            except GitError as exc:
                raise RunFailed(f"could not clone {repository.full_name}", [str(exc)]) from exc
            model_name, client = self._planner_client(config)
            docs = {name: text for name in AGENT_DOCS if (text := repo.read_optional(name))}
            request = PlanRequest(
                repo_full_name=repository.full_name,
                issue_number=run.issue_number,
                issue_title=issue.title,
                issue_body=issue.body or "",
                instructions=run.instructions,
                docs=docs,
                follow_up_branch=run.pr_branch,
            )
            model_config = self._catalog().get(model_name)
            budget = PlannerBudget(
                max_rounds=self.settings.planner_max_rounds,
                max_cost_usd=self.settings.planner_budget_usd,
            )

            pricer = turn_pricer(self.prices, model_config.price_key)
            try:
                if model_config.engine == "baro":
                    outcome = await make_plan(client, repo, request, pricer=pricer, budget=budget)
                else:
                    os.chmod(tmp, 0o711)  # noqa: S103 - the sandbox uid mounts the checkout (read-only)
                    outcome = await self._plan_on_engine(
                        model_name, model_config, checkout, request, budget
                    )
            except PlannerFailed as exc:
                stats = exc.stats
                await self.store.update(
                    run.id, lambda r: r.model_copy(update={"plan_stats": stats})
                )
                raise RunFailed(
                    exc.reason,
                    exc.details,
                    "Make the issue's goal clearer, or comment `/baro plan` to try again.",
                ) from exc
            if run.pr_branch is None:
                created = await self._create_branch(run, gh, checkout, branch, base_sha)
                if created:
                    await self.store.branch_created(run.id, base_sha)
                else:
                    log.info("run %s reuses the existing branch %s", run.id, branch)

        auto = self.settings.auto_execute and config.auto_execute and not run.plan_only
        state: RunState = "ready" if auto else "planned"

        def planned(r: Run) -> Run | None:
            if r.state != "planning":
                return None
            return r.model_copy(
                update={
                    "state": state,
                    "plan": outcome.plan,
                    "plan_stats": outcome.stats,
                    "repo_config": config,
                    "environment": environment,
                    "default_branch": repository.default_branch,
                    "base_sha": base_sha,
                    "branch": branch,
                    "stories": {s.id: StoryRecord() for s in outcome.plan.stories},
                }
            )

        updated = await self.store.update(run.id, planned)
        if updated.state != state:
            return f"discarded ({updated.state})"
        await self.store.append_event(
            run.id, "planned", stories=len(outcome.plan.stories), state=state
        )
        log.info("run %s planned: %d stories", run.id, len(outcome.plan.stories))
        if state == "ready":
            # The run's first checklist shows the plan: one comment write, made as its
            # stories are dispatched instead of a spaced write ahead of them.
            await self.on_ready(run.id)
            return state
        body = render_plan(
            run.id,
            outcome.plan,
            stats=outcome.stats,
            state=state,
            auto_execute=auto,
            page_url=RunLinks.from_settings(self.settings).url(run.id, run.created_at),
            environment=environment_lines(environment, config.setup),
        )
        await gh.upsert_comment(
            run.owner, run.repo, run.issue_number, run.marker, self.settings.bot_login, body
        )
        return state

    async def _plan_on_engine(
        self,
        name: str,
        model: ModelConfig,
        checkout: Path,
        request: PlanRequest,
        budget: PlannerBudget,
    ) -> PlannerOutcome:
        key = self.settings.model_keys.get(name)
        if self.engines is None or key is None:
            raise RunFailed(
                f"the planner model {name!r} runs on {model.engine}, which this worker cannot "
                "start" + ("" if key else f" (no secret in `{model.api_key_env}`)"),
                next_step="The operator needs to run the worker with `scripts/install`'s "
                "engines and the model's secret set.",
            )
        factory = self.engines(
            model, key.get_secret_value(), checkout, budget.max_cost_usd, budget.max_rounds
        )
        async with factory as engine:
            return await make_plan_on_engine(engine, request, budget, engine_model_label(model))

    def _catalog(self) -> ModelCatalog:
        return ModelCatalog(self.settings.models)

    def _repo_config(self, text: str | None) -> RepoConfig:
        if text is None:
            return RepoConfig()
        try:
            return parse_repo_config(text, self._catalog().names)
        except RepoConfigError as exc:
            raise RunFailed(
                f"{REPO_CONFIG_PATH} on the default branch is invalid",
                [str(exc)],
                f"Fix `{REPO_CONFIG_PATH}` on the default branch, then comment `/baro`.",
            ) from exc

    def _planner_client(self, config: RepoConfig) -> tuple[str, ModelClient]:
        try:
            name, client, _ = phase_client(
                self.settings, "planner", config, self.http, self.store.metrics, self.prices
            )
        except ModelUnavailable as exc:
            raise RunFailed(exc.reason, next_step=exc.next_step) from exc
        return name, client

    async def _fail(self, run: Run, gh: InstallationClient, failure: RunFailed) -> None:
        reason = failure.reason

        def failed(r: Run) -> Run | None:
            if r.terminal:
                return None
            return r.model_copy(update={"state": "failed", "failure": reason})

        await self.store.update(run.id, failed)
        await self.store.append_event(run.id, "failed", reason=reason)
        body = render_failed(run.id, reason, failure.details, next_step=failure.next_step)
        await gh.upsert_comment(
            run.owner, run.repo, run.issue_number, run.marker, self.settings.bot_login, body
        )
        log.warning("run %s failed: %s", run.id, reason)


async def _environment(
    config: RepoConfig, read: Callable[[str], Awaitable[str | None]]
) -> RunEnvironment:
    """The run's environment from the default branch: `image:`, else the devcontainer's
    image, else the default (a bad `image:` name is found by the runner's preparation)."""
    if config.image:
        chosen = choose_environment(config.image, None)
    else:
        chosen = choose_environment(None, None)
        for path in DEVCONTAINER_PATHS:
            text = await read(path)
            if text is not None:
                chosen = choose_environment(None, text, path)
                break
    return RunEnvironment(image=chosen.image, source=chosen.source, note=chosen.note)


def _to_planning(run: Run) -> Run | None:
    if run.state == "queued":
        return run.model_copy(update={"state": "planning"})
    return None

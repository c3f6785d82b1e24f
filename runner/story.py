"""The runner's `run_story` job: one story attempt → one commit on the run branch.

Idempotent under at-least-once delivery: a stale attempt is a no-op, a story whose commit
is already on the branch is recorded as landed without committing again, and a lease with
a heartbeat says who works on the story (the orchestrator's reaper re-dispatches a story
whose lease lapsed). Every ending is written to the run record as a typed outcome with
evidence, then the orchestrator is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from app.core.plan import Story, Tier
from app.core.run import DEFAULT_ENVIRONMENT, FailureKind, Run, VerifyResult, now
from app.core.scheduler import admit, max_parallel_of
from app.gitcmd import GitAuth, GitError
from app.github import GitHubGateway
from app.llm.catalog import CatalogError, ModelCatalog, build_client
from app.llm.client import ModelClient
from app.llm.config import ModelConfig
from app.llm.meter import MeteredClient, turn_pricer
from app.llm.prices import PriceTable
from app.llm.types import Usage
from app.settings import Settings
from app.store import RunStore
from app.warmup import WarmUp
from runner.agent import (
    COMMAND_NOT_FOUND,
    AgentResult,
    Opening,
    StoryAgent,
    StoryBrief,
    StoryBudget,
)
from runner.agent import VerifyResult as CheckResult
from runner.change import Refusal
from runner.commit_message import CommitMessage
from runner.engine_agent import EngineAgent
from runner.engine_session import EngineSession
from runner.engines import EngineMissing
from runner.gateway import Budget
from runner.images import ImageError
from runner.landing import Conflict, LandError, OnRebased, Turn, land
from runner.mirror import RepoRef
from runner.sandbox import CommandSandbox, NoSandbox, Sandbox
from runner.setup import SetupFailed
from runner.slots import AgentSlots, AttemptSlot
from runner.tools import TOOL_SPECS
from runner.workspace import Workspaces
from runner.worktree import Worktree, inspect

if TYPE_CHECKING:
    from runner.environment import RunEnvironment
    from runner.prepare import Preparation

log = logging.getLogger(__name__)

AGENT_FAILURES: dict[str, FailureKind] = {
    "budget": "execution",
    "no_finish": "execution",
    "model_fatal": "provider",
    "model_unavailable": "provider",
    "verification": "verification",
    "cancelled": "cancelled",
    "conflict": "conflict",
    "refused": "refused",
    "engine": "execution",
}
VERIFY_TIMEOUT = 1800
TRANSCRIPT_MAX_CHARS = 2_000_000
TRANSCRIPT_TTL_SECONDS = 7 * 24 * 3600
LAND_FAILURES: dict[str, FailureKind] = {
    "no_change": "no_change",
    "workflow": "workflow",
    "conflict": "conflict",
    "push": "transport",
    "verification": "verification",
    "refused": "refused",
}
REFUSALS_KEPT = 20
MESSAGE_KEPT = 300
"""Characters of a failure message kept in an attempt's event (the record keeps it all)."""


@dataclass
class Outcome:
    """How the attempt ended, as recorded on the story."""

    landed_sha: str | None = None
    kind: FailureKind | None = None
    message: str | None = None
    evidence: list[str] = field(default_factory=list)
    summary: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float | None = 0.0
    model: str | None = None
    refusals: list[str] = field(default_factory=list)
    tier: str | None = None
    """The tier this attempt ran on (escalated on retries)."""


class StoryFailed(Exception):
    def __init__(self, kind: FailureKind, message: str, evidence: list[str] | None = None):
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
        self.evidence = evidence or []


REPO_LOOKUP_SECONDS = 300.0


@dataclass
class StoryRunner:
    settings: Settings
    store: RunStore
    gateway: GitHubGateway
    workspaces: Workspaces
    sandbox: CommandSandbox
    http: httpx.AsyncClient
    prices: PriceTable
    notify: Callable[[str, str, int], Awaitable[None]]
    """(run_id, story_id, attempt) → the orchestrator's `story_finished`."""
    landing: Callable[[str, str, int], Awaitable[None]]
    """(run_id, story_id, attempt) → the orchestrator's `story_landing`: a slot is free."""
    slots: AgentSlots
    runner_id: str
    verified: Callable[[str, int], Awaitable[None]]
    """(run_id, round) → the orchestrator's `run_verified`."""
    _repos: dict[tuple[int, str, str], tuple[RepoRef, float]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Repository lookups of this process: every story of a run needs the same one."""
    preparation: Preparation | None = None
    """The run's image and `setup:` result (None: the runner's own system, no setup)."""

    @contextlib.asynccontextmanager
    async def _environment(self, run: Run) -> AsyncIterator[RunEnvironment | None]:
        """The run's environment held for the block (an image that cannot be had is the
        runner's trouble here: preparation already proved it works)."""
        if self.preparation is None:
            yield None
            return
        try:
            async with self.preparation.environment(run) as renv:
                yield renv
        except ImageError as exc:
            raise StoryFailed("infrastructure", f"the run's environment: {exc}") from exc

    def _in(self, renv: RunEnvironment | None) -> CommandSandbox:
        if renv is not None and isinstance(self.sandbox, Sandbox | NoSandbox):
            return renv.sandbox(self.sandbox)
        return self.sandbox

    async def _provide(
        self, run: Run, renv: RunEnvironment | None, wt: Worktree, auth: GitAuth
    ) -> Callable[[], Awaitable[list[CheckResult]]] | None:
        """Dependencies in the worktree; returns the check that sets them up again when a
        lock file changes (None without `setup:`)."""
        prep = self.preparation
        if prep is None or renv is None or not (run.repo_config and run.repo_config.setup):
            return None
        try:
            provided = await prep.provide(run, renv, wt, auth)
            await prep.redo(run, renv, wt, auth, provided)
        except SetupFailed as exc:
            raise StoryFailed("infrastructure", str(exc), [exc.tail]) from exc

        async def again() -> list[CheckResult]:
            assert prep is not None and renv is not None
            try:
                await prep.redo(run, renv, wt, auth, provided)
            except SetupFailed as exc:
                return [setup_result(exc, renv.name)]
            return []

        return again

    async def run_story(self, run_id: str, story_id: str, attempt: int) -> str:
        run = await self.store.find(run_id)
        if run is None or run.plan is None or story_id not in run.stories:
            return "unknown run or story"
        record = run.stories[story_id]
        if record.state == "landed":
            return "already landed"
        if record.state != "running" or record.attempts != attempt:
            return f"stale attempt {attempt} (story is {record.state}, attempt {record.attempts})"
        holder = f"{self.runner_id}:{attempt}"
        ttl = self.settings.story_lease_seconds
        claimed, first = await self.store.start_attempt(run_id, story_id, attempt, holder, ttl)
        if not claimed:
            return "another runner holds this story"
        # An attempt that could have pushed before (this job delivered again, or any retry:
        # an earlier attempt's runner may have died after its push) checks the branch before
        # asking the model anything.
        fresh = first and attempt == 1
        if record.started_at is not None:  # dispatched → claimed: the wait for a runner
            wait = (now() - record.started_at).total_seconds()
            await self.store.metrics.story_started(run.plan.story(story_id).tier, wait)
        tier, model = self._route_or_none(run, run.plan.story(story_id), record.story_retries)
        await self.store.append_event(
            run_id, "story_started", story=story_id, attempt=attempt, tier=tier, model=model
        )
        # The worktree is removed only after the result is recorded and the orchestrator
        # told: the next stories should not wait for clean-up.
        async with contextlib.AsyncExitStack() as cleanup:
            async with self.store.heartbeat(run_id, story_id, holder, ttl) as lost:
                try:
                    outcome = await self._attempt(
                        run, run.plan.story(story_id), lost, cleanup, fresh=fresh
                    )
                except StoryFailed as failed:
                    outcome = Outcome(
                        kind=failed.kind, message=failed.message, evidence=failed.evidence
                    )
                except Exception as exc:  # the runner's own trouble: typed, never lost
                    log.exception("story %s/%s crashed", run_id, story_id)
                    message = f"runner error: {exc!r}"[:500]
                    outcome = Outcome(kind="infrastructure", message=message)
            outcome.tier = outcome.tier or tier
            await self._record(run_id, story_id, attempt, outcome)
            await self.notify(run_id, story_id, attempt)
        return "landed" if outcome.landed_sha else f"failed ({outcome.kind})"

    async def _attempt(
        self,
        run: Run,
        story: Story,
        lost: asyncio.Event,
        cleanup: contextlib.AsyncExitStack,
        *,
        fresh: bool,
    ) -> Outcome:
        assert run.plan is not None and run.branch is not None
        record = run.stories[story.id]
        model_name, model, secret = self._model(run, story, record.story_retries)
        config = run.repo_config
        brief = StoryBrief(
            repo_full_name=f"{run.owner}/{run.repo}",
            run_id=run.id,
            story=story,
            design_note=run.plan.design_note,
            plan_summary=run.plan.summary,
            sibling_titles=[f"{s.id}: {s.title}" for s in run.plan.stories if s.id != story.id],
            sibling_files=sorted(
                {f for s in run.plan.stories if s.id != story.id for f in s.writes}
                - set(story.writes)
            ),
            verify_commands=list(config.verify) if config else [],
            previous_failure=record.previous_failure if record.attempts > 1 else None,
        )
        client = self._client(model, secret) if model.engine == "baro" else None
        opening: Opening | None = None
        if fresh and client is not None:
            # baro's loop asks for its first turn now and prepares while the model thinks (an
            # engine CLI needs its worktree first)
            opening = Opening(client, brief, TOOL_SPECS)
            cleanup.callback(opening.cancel)  # unread when the attempt ends before the agent
        repo, auth = await self.access(run)
        if not fresh:
            try:
                sha = await self.workspaces.find_landed(repo, run.branch, auth, run.id, story.id)
            except GitError as exc:
                raise StoryFailed("transport", str(exc)) from exc
            if sha is not None:
                return Outcome(landed_sha=sha, summary="landed by an earlier delivery of this job")

        async def should_stop() -> bool:
            if lost.is_set():
                return True
            current = await self.store.find(run.id)
            return current is None or current.state != "running"

        budget = StoryBudget(
            max_rounds=self.settings.story_max_rounds, max_cost_usd=self.settings.story_budget_usd
        )
        try:
            wt = await cleanup.enter_async_context(
                self.workspaces.worktree(
                    repo,
                    run.branch,
                    auth,
                    run_id=run.id,
                    story_id=story.id,
                    attempt=record.attempts,
                    known_head=await self.store.branch_head(run.id),
                )
            )
            renv = await cleanup.enter_async_context(self._environment(run))
            again = await self._provide(run, renv, wt, auth)
            refused_now: list[Refusal] = []

            async def precommit() -> list[str]:
                refused_now[:] = (await inspect(wt)).refusals
                return [r.line() for r in refused_now]

            agent: StoryAgent
            environment = renv.name if renv is not None else DEFAULT_ENVIRONMENT
            if model.engine == "baro":
                assert client is not None
                agent = StoryAgent(
                    client,
                    brief,
                    wt.path,
                    self._in(renv),
                    pricer=turn_pricer(self.prices, model.price_key),
                    budget=budget,
                    should_stop=should_stop,
                    precommit=precommit,
                    environment=environment,
                    before_verify=again,
                    opening=opening,
                )
            else:
                # The CLI itself runs on the runner's root (its binary needs it); baro's own
                # checks of its work run in the run's environment.
                session = await self._engine_session(model, secret, wt, budget)
                cleanup.push_async_callback(self._close_session, session)
                agent = EngineAgent(
                    session,
                    brief,
                    wt.path,
                    self._in(renv),
                    budget=budget,
                    should_stop=should_stop,
                    precommit=precommit,
                    environment=environment,
                    before_verify=again,
                )
            # Saved when the attempt is over: after landing, so conflict rounds are in it.
            cleanup.push_async_callback(
                self._save_transcript, run.id, story.id, record.attempts, agent, auth
            )
            result = await agent.work()
            if result.status != "finished":
                outcome = _from_agent(result, model_name)
                if result.reason == "refused" and all(r.kind == "workflow" for r in refused_now):
                    outcome.kind = "workflow"  # no retry can get a workflow change pushed
                return outcome
            if await should_stop():  # cancelled while the agent finished: do not land
                outcome = _from_agent(result, model_name)
                outcome.kind, outcome.message = "cancelled", "the run was cancelled"
                return outcome

            attempt = record.attempts
            slot = AttemptSlot(
                self.slots,
                give_up=lambda: self.store.set_landing(run.id, story.id, attempt),
                announce=lambda: self._slot_free(run.id, story.id, attempt),
                take_back=lambda: self.store.back_to_work(
                    run.id,
                    story.id,
                    attempt,
                    self.settings.max_stories_in_flight,
                    self.settings.max_parallel,
                ),
            )
            cleanup.push_async_callback(slot.close)

            async def resolve(conflict: Conflict) -> bool:
                await slot.take()  # the agent works again: within the limits, as it started
                try:
                    return await agent.resolve_conflict(list(conflict.files), conflict.details)
                finally:
                    await slot.free()

            async def recheck(overlap: Sequence[str]) -> None:
                red = [r for r in await agent.verify() if not r.passed]
                if red:
                    names = ", ".join(f"`{r.command}`" for r in red)
                    raise LandError(
                        "verification",
                        f"after rebasing onto stories that also changed {', '.join(overlap)}, "
                        f"{names} failed",
                        overlap,
                        [f"$ {r.command}\n{r.output_tail}" for r in red],
                    )

            message = CommitMessage(
                run_id=run.id,
                story_id=story.id,
                title=story.title,
                summary=agent.result.summary,
                co_author=(run.requester, run.requester_id) if run.requester_id else None,
            )
            # The agent is done: its slot goes to the next story while this one lands.
            slot.free_soon()
            try:
                landed = await _land(
                    wt, message, auth, resolve, recheck, self.store.landing_turn(run.id)
                )
            except LandError as exc:
                outcome = _from_agent(agent.result, model_name)
                outcome.kind = LAND_FAILURES.get(exc.kind, "transport")
                outcome.message = exc.message
                outcome.evidence += exc.evidence
                if exc.kind in ("refused", "workflow"):
                    outcome.refusals = _merged(outcome.refusals, exc.evidence)
                return outcome
            outcome = _from_agent(agent.result, model_name)
            outcome.landed_sha = landed
            return outcome
        except GitError as exc:
            raise StoryFailed("transport", str(exc)) from exc

    async def _save_transcript(
        self, run_id: str, story_id: str, attempt: int, agent: StoryAgent, auth: GitAuth
    ) -> None:
        """The attempt's conversation, for debugging: secrets redacted, size and age capped."""
        text = agent.conversation.model_dump_json()
        for secret in (
            auth.token,
            *(k.get_secret_value() for k in self.settings.model_keys.values()),
        ):
            text = text.replace(secret, "***")
        if len(text) > TRANSCRIPT_MAX_CHARS:
            text = text[:TRANSCRIPT_MAX_CHARS]
        try:
            await self.store.save_transcript(
                run_id, story_id, attempt, text, TRANSCRIPT_TTL_SECONDS
            )
        except Exception:  # debugging aid only: never fail a story over it
            log.warning("could not save the transcript of %s/%s", run_id, story_id)

    async def _slot_free(self, run_id: str, story_id: str, attempt: int) -> None:
        """Tell the orchestrator, when a story could take the slot: one of this run's, or
        of a run waiting for capacity."""
        run = await self.store.find(run_id)
        if run is None:
            return
        if admit(run, max_parallel_of(run, self.settings.max_parallel)) or (
            await self.store.waiting()
        ):
            await self.landing(run_id, story_id, attempt)

    async def warm(self, warm: WarmUp) -> None:
        """The run's base in this runner's mirror, and its token minted, while it is being
        planned (`app.warmup`)."""
        run = await self.store.find(warm.run_id)
        if run is None:
            return
        repo, auth = await self.access(run)
        if await self.workspaces.warm(repo, warm.branch, warm.sha, auth):
            log.info("warmed the mirror of %s for run %s", repo.full_name, run.id)

    async def access(self, run: Run) -> tuple[RepoRef, GitAuth]:
        """The repository and a fresh token that may push to it (never stored)."""
        try:
            token = await self.gateway.repo_token(
                run.installation_id, run.repo, {"contents": "write", "metadata": "read"}
            )
            repo = await self._repository(run)
        except Exception as exc:
            raise StoryFailed("transport", f"GitHub: {type(exc).__name__}: {exc}"[:500]) from exc
        return repo, GitAuth(token)

    async def _repository(self, run: Run) -> RepoRef:
        """The repository's name and clone URL, looked up once per REPO_LOOKUP_SECONDS (a
        renamed repository is seen after that; its pushes are redirected meanwhile)."""
        key = (run.installation_id, run.owner, run.repo)
        cached = self._repos.get(key)
        if cached is not None and time.monotonic() - cached[1] < REPO_LOOKUP_SECONDS:
            return cached[0]
        async with self.gateway.installation(run.installation_id).session() as gh:
            repository = await gh.repository(run.owner, run.repo)
        repo = RepoRef(repository.full_name, repository.clone_url)
        self._repos[key] = (repo, time.monotonic())
        return repo

    async def verify_run(self, run_id: str, round_: int = 1) -> str:
        """Run the repository's `verify:` commands on the integrated run branch."""
        run = await self.store.find(run_id)
        if run is None or run.state != "finalizing" or run.branch is None:
            return "skipped"
        holder = f"{self.runner_id}:verify:{round_}"
        ttl = self.settings.story_lease_seconds
        if not await self.store.claim_lease(run_id, "verify", "queued:verify", holder, ttl):
            return "another runner is verifying this run"
        async with self.store.heartbeat(run_id, "verify", holder, ttl):
            passed = await self._verify_leased(run, round_)
        await self.verified(run_id, round_)
        return "green" if passed else "red"

    async def _verify_leased(self, run: Run, round_: int) -> bool:
        """Verify and record the results while holding the verify lease (the orchestrator's
        reaper verifies again if this runner dies before recording)."""
        run_id = run.id
        assert run.branch is not None
        config = run.repo_config
        results: list[VerifyResult] = []
        try:
            repo, auth = await self.access(run)
            async with (
                self._environment(run) as renv,
                self.workspaces.worktree(
                    repo, run.branch, auth, run_id=run.id, story_id="verify", attempt=1
                ) as wt,
            ):
                again = await self._provide(run, renv, wt, auth)
                for failed in await again() if again is not None else []:
                    results.append(
                        VerifyResult(
                            command=failed.command,
                            exit_code=failed.exit_code,
                            passed=False,
                            output_tail=failed.output_tail,
                        )
                    )
                sandbox = self._in(renv)
                name = renv.name if renv is not None else DEFAULT_ENVIRONMENT
                for command in config.verify if config and not results else []:
                    result = await sandbox.run(command, cwd=wt.path, timeout=VERIFY_TIMEOUT)
                    tail = result.output[-4000:]
                    if result.exit_code == COMMAND_NOT_FOUND:
                        tail += f"\n(command not found in {name}: `{command}`)"
                    results.append(
                        VerifyResult(
                            command=command,
                            exit_code=result.exit_code,
                            passed=result.ok,
                            output_tail=tail,
                            duration_s=round(result.duration, 2),
                        )
                    )
        except (StoryFailed, GitError) as exc:
            results.append(
                VerifyResult(
                    command="(checkout)", exit_code=None, passed=False, output_tail=str(exc)
                )
            )
        verification = results

        def record(r: Run) -> Run | None:
            if r.state != "finalizing":
                return None
            return r.model_copy(update={"verification": verification})

        await self.store.update(run_id, record)
        passed = all(v.passed for v in verification)
        await self.store.append_event(run_id, "verified", passed=passed)
        return passed

    def _route(self, run: Run, story: Story, retries: int) -> tuple[Tier, str]:
        """The tier and configured model name an attempt runs on (escalated on retries)."""
        routing = self.settings.routing
        if routing is None:
            raise StoryFailed("provider", "no models are configured on this baro server")
        if run.repo_config is not None:
            routing = routing.for_repo(run.repo_config)
        tier = routing.tier_for_story(story.tier, attempt=retries + 1)
        return tier, routing.model_for(tier)

    def _route_or_none(self, run: Run, story: Story, retries: int) -> tuple[str | None, str | None]:
        try:
            return self._route(run, story, retries)
        except StoryFailed:
            return None, None

    def _model(self, run: Run, story: Story, retries: int) -> tuple[str, ModelConfig, str]:
        """The routed model's name, entry and secret (API key or subscription token)."""
        _tier, name = self._route(run, story, retries)
        try:
            model = ModelCatalog(self.settings.models).get(name)
        except CatalogError as exc:
            raise StoryFailed("provider", str(exc)) from exc
        key = self.settings.model_keys.get(name)
        if key is None:
            raise StoryFailed("provider", f"model {name!r} has no API key on this runner")
        return name, model, key.get_secret_value()

    def _client(self, model: ModelConfig, secret: str) -> ModelClient:
        client = build_client(model, secret, self.http)
        return MeteredClient(client, self.store.metrics, self.prices)

    async def _engine_session(
        self, model: ModelConfig, secret: str, wt: Worktree, budget: StoryBudget
    ) -> EngineSession:
        """A started CLI session for the attempt, its budget enforced by its gateway."""
        session = EngineSession(
            model,
            secret,
            self.sandbox,
            wt.path,
            prices=self.prices,
            budget=Budget(
                max_cost_usd=budget.max_cost_usd,
                max_rounds=budget.max_rounds,
                max_tokens=budget.max_tokens,
            ),
            timeout_s=self.settings.engine_timeout_seconds,
            engines=self.settings.engines_dir,
        )
        try:
            await session.start()
        except EngineMissing as exc:
            await session.close()
            raise StoryFailed("infrastructure", str(exc)) from exc
        return session

    async def _close_session(self, session: EngineSession) -> None:
        """Every metered call into the same metrics as baro's own loop, then clean up."""
        await session.close()
        for usage, cost in session.calls:
            await self.store.metrics.model_call(session.config.name, usage, cost)

    async def _record(self, run_id: str, story_id: str, attempt: int, outcome: Outcome) -> None:
        applied: list[bool] = []

        def apply(run: Run) -> Run | None:
            applied.clear()
            record = run.stories.get(story_id)
            if record is None or record.attempts != attempt or record.state != "running":
                return None
            applied.append(True)
            cost = (
                None
                if outcome.cost is None or record.cost_usd is None
                else record.cost_usd + outcome.cost
            )
            at = now()
            ended = "landed" if outcome.landed_sha else (outcome.kind or "execution")
            update: dict[str, object] = {
                "finished_at": at,
                "spans": record.ended(at, ended, outcome.model),
                "model": outcome.model or record.model,
                "input_tokens": record.input_tokens + outcome.usage.prompt,
                "cache_read_tokens": record.cache_read_tokens + outcome.usage.cache_read,
                "output_tokens": record.output_tokens + outcome.usage.output,
                "cost_usd": cost,
                "summary": outcome.summary or record.summary,
                "refusals": _merged(record.refusals, outcome.refusals),
            }
            if outcome.landed_sha:
                update.update(state="landed", sha=outcome.landed_sha, failure=None)
            else:
                update.update(
                    state="failed",
                    awaiting_decision=True,
                    failure_kind=outcome.kind or "execution",
                    failure=outcome.message,
                    evidence=outcome.evidence[-6:],
                )
            stories = dict(run.stories)
            stories[story_id] = record.model_copy(update=update)
            return run.model_copy(update={"stories": stories})

        await self.store.update(run_id, apply)
        if not applied:
            return  # a stale report (the reaper gave this attempt up): not this attempt's end
        await self.store.append_event(
            run_id,
            "story_landed" if outcome.landed_sha else "story_failed",
            **attempt_facts(story_id, attempt, outcome),
        )


async def _land(
    wt: Worktree,
    message: CommitMessage,
    auth: GitAuth,
    resolve: Callable[[Conflict], Awaitable[bool]],
    recheck: OnRebased,
    turn: Turn,
) -> str:
    landed = await land(wt, message, auth, on_conflict=resolve, on_rebased=recheck, turn=turn)
    return landed.sha


def setup_result(exc: SetupFailed, environment: str) -> CheckResult:
    """A failed `setup:` run again after a lock file changed, as a failed check."""
    return CheckResult(
        command=f"setup: {exc.command}",
        source="repository",
        exit_code=exc.exit_code,
        passed=False,
        output_tail=exc.tail,
        environment=environment,
    )


def attempt_facts(story_id: str, attempt: int, outcome: Outcome) -> dict[str, object]:
    """What the event log keeps of one attempt's end (`app.core.timeline` reads it back)."""
    return {
        "story": story_id,
        "attempt": attempt,
        "sha": outcome.landed_sha,
        "failure": outcome.kind,
        "message": (outcome.message or "")[:MESSAGE_KEPT] or None,
        "tier": outcome.tier,
        "model": outcome.model,
        "input_tokens": outcome.usage.prompt,
        "cached_tokens": outcome.usage.cache_read,
        "output_tokens": outcome.usage.output,
        "cost_usd": outcome.cost,
    }


def _merged(kept: list[str], new: list[str]) -> list[str]:
    merged = list(kept)
    merged += [line for line in new if line not in merged]
    return merged[-REFUSALS_KEPT:]


def _from_agent(result: AgentResult, model: str) -> Outcome:
    cost = None if result.cost is None else float(result.cost)
    outcome = Outcome(
        summary=result.summary or None,
        usage=result.usage,
        cost=cost,
        model=result.model or model,
        evidence=list(result.evidence),
    )
    outcome.refusals = list(result.refusals)
    if result.status != "finished":
        outcome.kind = AGENT_FAILURES.get(result.reason or "", "execution")
        outcome.message = result.message or result.reason
    return outcome

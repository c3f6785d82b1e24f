"""The review job: a shallow clone of the run branch, the integrated diff, the reviewer agent,
and the round recorded on the run (`app.core.review` decides what it leads to).

Held under a lease with a heartbeat like planning, so a re-delivered job or the recovery pass
never reviews twice at once; a review that cannot be made (no model, a model error, a budget)
is recorded with its reason and the run goes on to verification and the pull request.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.core.review import add_review_fixes, changed_lines, review_pending
from app.core.routing import RepoConfig
from app.core.run import ReviewRound, Run
from app.gitcmd import GitAuth, GitError, diff_since, shallow_clone
from app.github import GitHubGateway
from app.llm.meter import turn_pricer
from app.llm.prices import PriceTable
from app.settings import Settings
from app.store import RunStore
from app.worker.orchestrator import REVIEW_LEASE
from app.worker.phase_models import ModelUnavailable, phase_client
from app.worker.planner import PlannerBudget
from app.worker.repo_tools import ReadOnlyRepo
from app.worker.reviewer import ReviewFailed, review

log = logging.getLogger(__name__)

REVIEW_LEASE_SECONDS = 30.0
DIFF_MAX = 2_000_000


@dataclass
class Reviewing:
    settings: Settings
    gateway: GitHubGateway
    store: RunStore
    http: httpx.AsyncClient
    prices: PriceTable
    on_reviewed: Callable[[str], Awaitable[str]]
    """The orchestrator's `reviewed`: fix stories run, or verification and the PR follow."""

    async def review_run(self, run_id: str) -> str:
        run = await self.store.get(run_id)
        if run.state != "finalizing" or not review_pending(run):
            return f"skipped ({run.state})"
        holder = f"reviewer:{uuid.uuid4().hex[:12]}"
        queued = f"queued:{REVIEW_LEASE}"
        if not await self.store.claim_lease(
            run_id, REVIEW_LEASE, queued, holder, REVIEW_LEASE_SECONDS
        ):
            return "being reviewed by another worker"
        async with self.store.heartbeat(run_id, REVIEW_LEASE, holder, REVIEW_LEASE_SECONDS):
            round_ = len(run.reviews) + 1
            await self.store.append_event(run_id, "reviewing", round=round_)
            result = await self._review(run, round_)

            def record(r: Run) -> Run | None:
                if r.state != "finalizing" or len(r.reviews) != round_ - 1:
                    return None  # recorded already (a repeated job) or the run moved on
                return add_review_fixes(r, result)

            after = await self.store.update(run_id, record)
            await self.store.append_event(
                run_id,
                "reviewed",
                round=round_,
                findings=len(result.findings),
                blocking=len(result.blocking),
                fixes=len(after.reviews[-1].fixes) if after.reviews else 0,
                error=result.error,
            )
        return await self.on_reviewed(run_id)

    async def _review(self, run: Run, round_: int) -> ReviewRound:
        assert run.plan is not None and run.branch is not None and run.base_sha is not None
        config = run.repo_config or RepoConfig()
        try:
            name, client, price_key = phase_client(
                self.settings, "review", config, self.http, self.store.metrics, self.prices
            )
        except ModelUnavailable as exc:
            return ReviewRound(round=round_, error=exc.reason)
        budget = PlannerBudget(
            max_rounds=self.settings.planner_max_rounds,
            max_cost_usd=self.settings.planner_budget_usd,
        )
        try:
            async with self.gateway.installation(run.installation_id).session() as gh:
                repository = await gh.repository(run.owner, run.repo)
            token = await self.gateway.repo_token(
                run.installation_id, run.repo, {"contents": "read", "metadata": "read"}
            )
            auth = GitAuth(token)
            landed = sum(1 for r in run.stories.values() if r.state == "landed")
            with tempfile.TemporaryDirectory(prefix="baro-review-") as tmp:
                checkout = Path(tmp) / "repo"
                await shallow_clone(
                    repository.clone_url, checkout, auth, run.branch, depth=landed + 2
                )
                diff = await diff_since(checkout, auth, run.base_sha, DIFF_MAX)
                outcome = await review(
                    client,
                    ReadOnlyRepo(checkout),
                    run.plan,
                    diff,
                    changed_lines(diff),
                    repo_full_name=repository.full_name,
                    round_=round_,
                    pricer=turn_pricer(self.prices, price_key),
                    budget=budget,
                )
        except ReviewFailed as exc:
            log.warning("review of run %s failed: %s", run.id, exc.reason)
            return ReviewRound(round=round_, error=exc.reason, stats=exc.stats)
        except (GitError, OSError) as exc:
            log.warning("review of run %s could not read the branch: %s", run.id, exc)
            return ReviewRound(round=round_, error=f"could not read the run branch: {exc}"[:500])
        except Exception as exc:  # GitHub or anything else: the run goes on without a review
            log.exception("review of run %s failed unexpectedly", run.id)
            return ReviewRound(round=round_, error=f"the review failed: {type(exc).__name__}")
        stats = outcome.stats.model_copy(update={"model": outcome.stats.model or name})
        return ReviewRound(
            round=round_, summary=outcome.summary, findings=outcome.findings, stats=stats
        )

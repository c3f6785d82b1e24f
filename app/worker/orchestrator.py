"""Run execution on the orchestrator: start, dispatch, results, finishing.

Short idempotent jobs around the pure decisions in `app/core/scheduler.py`. A story is
dispatched by marking it running (attempt counted) and enqueuing `run_story` on the runner
queue with a job id per attempt, so a repeated dispatch cannot start it twice. The runner
reports back through the run record and a `story_finished` job.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from githubkit.exception import RequestError, RequestFailed

from app.core.final_comment import render_final_comment
from app.core.plan import RunState
from app.core.pr_body import render_pr_body, render_pr_title
from app.core.report import environment_lines, render_environment_failed, render_plan
from app.core.review import render_review, review_pending
from app.core.run import Run, StoryRecord, needs_preparation, now
from app.core.run_facts import is_checkpoint
from app.core.scheduler import (
    RetryBudget,
    RunLoad,
    add_fix_story,
    admit,
    apply_failure,
    fair_capacity,
    finished,
    mark_dispatched,
    max_parallel_of,
    stop_for_budget,
)
from app.core.scheduler import on_failure as decide_failure
from app.github import (
    LABEL_DONE,
    LABEL_FAILED,
    LABEL_RUNNING,
    GitHubGateway,
    InstallationClient,
    describe_failure,
    is_client_error,
)
from app.run_links import RunLinks
from app.settings import Settings
from app.store import RunStore
from app.worker.checks import CheckRuns

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str, int], Awaitable[None]]
"""(run_id, story_id, attempt) → put `run_story` on the runner queue."""

QUEUED_LEASE_SECONDS = 30 * 60
FINALIZE_LEASE_SECONDS = 10.0
"""Held (with a heartbeat) while one worker opens the PR, so a resuming reaper cannot open a
second one; a killed worker's lease lapses within this and the reaper takes over."""
VERIFY_LEASE = "verify"
REVIEW_LEASE = "review"
FINALIZE_LEASE = "finalize"
PR_CLIENT_ERROR_ATTEMPTS = 3
"""Tries at the PR when GitHub refuses it (4xx after rate limits were waited out)."""
PR_SERVER_ERROR_ATTEMPTS = 10
"""Tries when GitHub is failing (5xx, timeouts): an outage gets minutes to pass."""


class PullRequestClosed(Exception):
    """A follow-up's PR is no longer open: there is nothing to add the work to."""


class PullRequestDeferred(Exception):
    """GitHub did not take the PR this time; the run stays finalizing for another try."""


@dataclass
class Orchestrator:
    settings: Settings
    gateway: GitHubGateway
    store: RunStore
    enqueue_story: Enqueue
    enqueue_verify: Callable[[str, int], Awaitable[None]]
    defer_refresh: Callable[[str, float], Awaitable[None]]
    enqueue_plan: Callable[[str], Awaitable[None]]
    enqueue_review: Callable[[str, int], Awaitable[None]]
    enqueue_prepare: Callable[[str, int], Awaitable[None]] | None = None
    """(run_id, generation) → `prepare_run` on a runner: the image and `setup:` first."""
    budget: RetryBudget = field(default_factory=RetryBudget)
    links: RunLinks = field(init=False)
    checks: CheckRuns = field(init=False)
    _admitting: bool = field(default=False, init=False)
    _admit_again: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.links = RunLinks.from_settings(self.settings)
        self.checks = CheckRuns(self.store, self.links)

    async def start(self, run_id: str) -> str:
        """A ready run starts executing (from auto-execute or `/baro approve`)."""
        run = await self.store.update(run_id, _to_running)
        if run.state != "running":
            return f"skipped ({run.state})"
        await self.store.append_event(run_id, "running")
        # before the label: its writes are spaced, stories are not
        if not await self.dispatch(run_id):
            current = await self.store.get(run_id)
            if needs_preparation(run) and current.state != "running":
                return "running"  # its preparation failed already: the failed label is written
            # waiting for its environment or for capacity: the plan shows meanwhile
            await self.render(current)
        async with self.gateway.installation(run.installation_id).session() as gh:
            # a run can end before this spaced write's turn: its final label must stay
            if not (await self.store.get(run_id)).terminal:
                await gh.set_state_label(run.owner, run.repo, run.issue_number, LABEL_RUNNING)
        return "running"

    async def dispatch(self, run_id: str, *, show: bool = True) -> list[str]:
        """Start what may start now; `show`: render the tracking comment if anything did."""
        chosen: list[str] = []
        run = await self.store.get(run_id)
        if run.state == "running" and run.environment is not None:
            if run.environment.state == "failed":
                await self.environment_failed(run)
                return []
            if needs_preparation(run) and self.enqueue_prepare is not None:
                # No story starts before its environment is known to work (`prepare_run`
                # reports back through a refresh, which dispatches again).
                await self.enqueue_prepare(run_id, run.environment.generation)
                return []
        budget = float(self._budget(run))
        await self.store.update(run_id, lambda r: stop_for_budget(r, budget))
        held_back: list[bool] = []

        def admit_some(run: Run, others: list[RunLoad]) -> Run | None:
            capacity = fair_capacity(
                [*others, RunLoad.of(run)], run.installation_id, self.settings.max_stories_in_flight
            )
            chosen.clear()
            chosen.extend(admit(run, self._max_parallel(run), capacity))
            held_back[:] = [len(admit(run, self._max_parallel(run))) > len(chosen)]
            return mark_dispatched(run, chosen) if chosen else None

        async with self.store.dispatch_lock():
            others = [r for r in await self.store.loads() if r.run_id != run_id]
            run = await self.store.update(run_id, lambda r: admit_some(r, others))
            if held_back and held_back[0]:
                # Inside the lock: a story finishing after this point finds the run waiting.
                await self.store.wait_for_capacity(run_id)
            else:
                await self.store.stop_waiting(run_id)
        for sid in chosen:
            attempt = run.stories[sid].attempts
            # Enqueue first: a worker killed in between leaves no lease, so the reaper retries
            # the story after its dispatch grace instead of waiting out a queued lease.
            await self.enqueue_story(run_id, sid, attempt)
            await self.store.queue_lease(run_id, sid, attempt, QUEUED_LEASE_SECONDS)
            await self.store.append_event(run_id, "dispatched", story=sid, attempt=attempt)
        if chosen and show:
            await self.render(run)
        elif not chosen and finished(run) and run.state == "running":
            await self.finish(run_id)
        return chosen

    async def environment_failed(self, run: Run) -> None:
        """The image or `setup:` failed before any story: the run ends, saying why."""
        env = run.environment
        assert env is not None
        reason = f"environment: {env.error}"

        def failed(r: Run) -> Run | None:
            if r.state != "running":
                return None
            return r.model_copy(update={"state": "failed", "failure": reason, "finished_at": now()})

        ended = await self.store.update(run.id, failed)
        if ended.state != "failed" or ended.failure != reason:
            return
        await self.store.append_event(run.id, "failed", reason=reason)
        await self.write_tracking(ended)
        async with self.gateway.installation(run.installation_id).session() as gh:
            await gh.set_state_label(run.owner, run.repo, run.issue_number, LABEL_FAILED)

    async def story_finished(self, run_id: str, story_id: str) -> str:
        run = await self.store.get(run_id)
        record = run.stories.get(story_id)
        if record is None:
            return "unknown story"
        if record.state == "failed" and record.awaiting_decision:
            kind = record.failure_kind or "execution"
            decision = decide_failure(run, story_id, kind, self.budget)

            def decide(r: Run) -> Run | None:
                current = r.stories[story_id]
                if not (current.state == "failed" and current.awaiting_decision):
                    return None
                return apply_failure(r, story_id, kind, decision)

            run = await self.store.update(run_id, decide)
            await self.store.append_event(
                run_id, "retry" if decision.retry else "gave_up", story=story_id, failure=kind
            )
        await self.dispatch(run_id)
        await self.admit_waiting(run_id)
        run = await self.store.get(run_id)
        await self.render(run)
        return run.stories[story_id].state

    async def slot_freed(self, run_id: str) -> str:
        """A story of the run is landing: its agent slot goes to the next story, of this
        run or of one waiting for capacity (the checklist shows it with the next edit)."""
        started = await self.dispatch(run_id, show=False)
        await self.admit_waiting(run_id)
        return f"started {len(started)}"

    async def admit_waiting(self, freed_by: str | None = None) -> None:
        """A slot freed: runs held back for capacity go now, longest waiting first, as far
        as their installation's share allows. One pass at a time per process: a call while
        a pass runs asks it for one more round instead of reading the same loads and
        queueing on the dispatch lock for slots another job is already filling."""
        self._admit_again = True
        if self._admitting:
            return
        self._admitting = True
        try:
            while self._admit_again:
                self._admit_again = False
                await self._admit_waiting_once(freed_by)
        finally:
            self._admitting = False

    async def _admit_waiting_once(self, freed_by: str | None) -> None:
        """A run whose installation has no room is not dispatched (and not read): a freed
        slot wakes the runs it can serve, not all."""
        waiting = [r for r in await self.store.waiting() if r != freed_by]
        if not waiting:
            return
        cap = self.settings.max_stories_in_flight
        loads = {load.run_id: load for load in await self.store.loads()}
        for run_id in waiting:
            load = loads.get(run_id)
            if load is None or load.state != "running":
                await self.store.stop_waiting(run_id)  # it ended or was stopped meanwhile
                continue
            if sum(r.running for r in loads.values()) >= cap:
                return
            if fair_capacity(list(loads.values()), load.installation_id, cap) <= 0:
                continue
            chosen = await self.dispatch(run_id)  # still held back: it keeps its place
            loads[run_id] = replace(load, running=load.running + len(chosen))

    async def finish(self, run_id: str) -> str:
        """Nothing more can run: verify the integrated branch (on a runner), then the PR."""

        closed: list[bool] = []

        def close(r: Run) -> Run | None:
            closed.clear()
            if r.state != "running" or not finished(r):
                return None
            closed.append(True)
            # Results of an earlier round (before a fix story) are not this round's.
            return r.model_copy(update={"state": "finalizing", "verification": []})

        run = await self.store.update(run_id, close)
        if not closed:
            return f"skipped ({run.state})"  # a repeated job: the first one finalizes
        await self.store.append_event(run_id, "finalizing")
        return await self.after_stories(run)

    async def after_stories(self, run: Run) -> str:
        """Every story finished: review (when due), then verification, then the PR."""
        if review_pending(run):
            await self.queue_review(run)
            await self.render(run)
            return "reviewing"
        if needs_verification(run):
            await self.verify(run)
            await self.render(run)
            return "verifying"
        return await self.open_pull_request(run.id)

    async def queue_review(self, run: Run) -> None:
        """Queue the next review round (the lease marks it queued for the recovery pass)."""
        await self.enqueue_review(run.id, len(run.reviews) + 1)
        await self.store.acquire_lease(
            run.id, REVIEW_LEASE, f"queued:{REVIEW_LEASE}", QUEUED_LEASE_SECONDS
        )

    async def reviewed(self, run_id: str) -> str:
        """A review round was recorded: its fix stories run, or the run goes on."""
        run = await self.store.get(run_id)
        if run.state == "running":
            fixes = run.reviews[-1].fixes if run.reviews else []
            await self.store.append_event(run_id, "review_fixes", stories=fixes)
            await self.dispatch(run_id)
            return f"fixing ({', '.join(fixes)})"
        if run.state != "finalizing":
            return f"skipped ({run.state})"
        return await self.after_stories(run)

    async def verify(self, run: Run) -> None:
        """Queue the integrated branch's verification on a runner (the lease marks it queued)."""
        round_ = 2 if run.fix_story else 1
        await self.enqueue_verify(run.id, round_)
        await self.store.acquire_lease(
            run.id, VERIFY_LEASE, f"queued:{VERIFY_LEASE}", QUEUED_LEASE_SECONDS
        )

    async def verified(self, run_id: str) -> str:
        """Verification finished: red gets one fix story, then the PR either way."""

        def maybe_fix(r: Run) -> Run | None:
            return add_fix_story(r) if r.state == "finalizing" else None

        run = await self.store.update(run_id, maybe_fix)
        if run.state == "running":
            await self.store.append_event(run_id, "fix_story", story=run.fix_story)
            await self.dispatch(run_id)
            return f"fixing ({run.fix_story})"
        return await self.open_pull_request(run_id)

    async def open_pull_request(self, run_id: str) -> str:
        """One PR per run, found before created; the final comment and labels follow."""
        holder = f"worker:{uuid.uuid4().hex[:12]}"
        if not await self.store.acquire_lease(
            run_id, FINALIZE_LEASE, holder, FINALIZE_LEASE_SECONDS
        ):
            return "skipped (another worker is opening the pull request)"
        async with self.store.heartbeat(run_id, FINALIZE_LEASE, holder, FINALIZE_LEASE_SECONDS):
            run = await self.store.get(run_id)
            if run.state != "finalizing" or run.branch is None:
                return f"skipped ({run.state})"
            try:
                run = await self._conclude(run)
            except PullRequestDeferred as deferred:
                return str(deferred)  # logged; the reaper tries again
        return run.state

    async def _conclude(self, run: Run) -> Run:
        run_id = run.id
        landed = any(r.state == "landed" for r in run.stories.values())
        async with self.gateway.installation(run.installation_id).session() as gh:
            pr_url: str | None = None
            pr_number: int | None = None
            refusal: str | None = None
            if landed:
                try:
                    pr_url, pr_number = await self._pull_request(gh, run)
                except PullRequestClosed as exc:
                    refusal = str(exc)
                except (RequestError, RequestFailed) as exc:
                    refusal = await self._refused(run, exc)  # re-raises while worth retrying
            if pr_number is not None and run.reviews and not run.review_posted:
                await self._submit_review(gh, run, pr_number)
            final = "failed" if refusal else _final_state(run, landed)
            url, number = pr_url, pr_number

            def conclude(r: Run) -> Run | None:
                if r.state != "finalizing":
                    return None
                update: dict[str, object] = {
                    "state": final,
                    "pr_url": url,
                    "pr_number": number,
                    "finished_at": r.finished_at or now(),
                    "pr_refusals": 0,
                }
                if refusal:
                    update["failure"] = refusal
                return r.model_copy(update=update)

            opened = run.pr_number is None and pr_number is not None and run.pr_branch is None
            run = await self.store.update(run_id, conclude)
            await self.store.append_event(run_id, "finished", state=run.state, pr=pr_number)
            # The PR is out; the spaced writes follow it, the result first: the final comment
            # and check run, then the review request and the state label (written even when
            # the comment could not be: the run's result is recorded already).
            try:
                await self._track(gh, run)
            except Exception as exc:
                log.warning(
                    "final comment of run %s not written: %s", run_id, describe_failure(exc)
                )
            if opened and pr_number is not None:
                await gh.request_review(run.owner, run.repo, pr_number, run.requester)
            await gh.set_state_label(
                run.owner,
                run.repo,
                run.issue_number,
                LABEL_DONE if run.state == "done" else LABEL_FAILED,
            )
        return run

    async def _submit_review(self, gh: InstallationClient, run: Run, pr_number: int) -> None:
        """The review's remaining findings as a PR review; a failure is logged, never fatal."""
        body, comments = render_review(run)
        if not body:
            return
        try:
            await gh.create_review(run.owner, run.repo, pr_number, body, comments)
        except Exception as exc:  # the run's result does not depend on the review text
            log.warning("posting the review of run %s failed: %s", run.id, describe_failure(exc))
            await self.store.append_event(run.id, "review_not_posted", detail=str(exc)[:300])
            return

        def posted(r: Run) -> Run | None:
            return None if r.review_posted else r.model_copy(update={"review_posted": True})

        await self.store.update(run.id, posted)
        await self.store.append_event(run.id, "review_posted", comments=len(comments))

    async def _pull_request(self, gh: InstallationClient, run: Run) -> tuple[str, int]:
        """Open the run's PR, or update the one already open from its branch."""
        branch = run.branch
        assert branch is not None
        if run.pr_branch is not None:
            # A follow-up adds commits to its PR; the description stays the original run's.
            pull = await gh.pull(run.owner, run.repo, run.issue_number)
            if pull.state != "open":
                raise PullRequestClosed(
                    f"pull request #{pull.number} was closed before the follow-up finished; "
                    f"its commits are on the branch {branch}"
                )
            return pull.html_url, pull.number
        repository = await gh.repository(run.owner, run.repo)
        run = run.model_copy(update={"finished_at": run.finished_at or now()})
        title = render_pr_title(run)
        page = self.links.url(run.id, run.created_at)
        body = render_pr_body(run, repo_html_url=repository.html_url, page_url=page)
        existing = await gh.find_pull(run.owner, run.repo, branch)
        if existing is None:
            pull = await gh.create_pull(
                run.owner,
                run.repo,
                title=title,
                body=body,
                head=branch,
                base=run.default_branch or repository.default_branch,
                draft=is_checkpoint(run),
            )
            return pull.html_url, pull.number
        await gh.update_pull(run.owner, run.repo, existing.number, title=title, body=body)
        if existing.draft and not is_checkpoint(run):
            await gh.mark_ready(existing.node_id)  # a retry completed it
        return existing.html_url, existing.number

    async def _refused(self, run: Run, exc: Exception) -> str:
        """Count a failed attempt at the PR. Below the limit the run stays finalizing and the
        reaper tries again; at the limit the run ends with GitHub's words and the branch, so
        a refusal that will not go away (a protected base, a deleted branch, a missing
        permission) is reported instead of retried until the stall limit."""
        detail = describe_failure(exc)
        limit = PR_CLIENT_ERROR_ATTEMPTS if is_client_error(exc) else PR_SERVER_ERROR_ATTEMPTS

        def count(r: Run) -> Run | None:
            if r.state != "finalizing":
                return None
            return r.model_copy(update={"pr_refusals": r.pr_refusals + 1})

        counted = await self.store.update(run.id, count)
        attempts = counted.pr_refusals
        await self.store.append_event(run.id, "pr_refused", attempt=attempts, detail=detail)
        if attempts < limit:
            text = f"opening the pull request failed (try {attempts} of {limit}): {detail}"
            log.warning(text)
            raise PullRequestDeferred(text) from exc
        log.error("gave up opening the pull request after %d tries: %s", attempts, detail)
        return f"GitHub refused to open the pull request after {attempts} tries: {detail}"

    async def render(self, run: Run, *, force: bool = False) -> float | None:
        """Re-render the tracking comment, at most once per debounce window per run (the
        window grows as the run goes on: `app/core/debounce.py`) and never behind a backlog
        of the installation's writes; an edit skipped is made by a deferred refresh later,
        so the last state always shows (and the run's conclusion is always written). Returns
        the seconds an edit was put off for a backlog (a refresh job retries itself then)."""
        if run.plan is None:
            return None
        base = self.settings.comment_debounce_seconds
        if not force and base > 0:
            # A progress edit never queues behind the installation's other writes (labels,
            # branches, pull requests of its other runs): it goes later, with the state then.
            backlog = self.gateway.installation(run.installation_id).writer.backlog()
            if backlog > self.settings.github_write_spacing:
                await self.defer_refresh(run.id, backlog + base)
                return backlog + base
            cap = max(base, self.settings.comment_debounce_max_seconds)
            if await self.store.open_render_window(run.id, base, cap) is None:
                # at the window's end; a refresh already waiting keeps its time
                await self.defer_refresh(run.id, await self.store.render_wait(run.id) + 0.05)
                return None
        await self.write_tracking(run)
        return None

    async def write_tracking(self, run: Run) -> None:
        """Write the tracking comment from the run's state as it is at the moment of writing,
        then the check run on the branch (which never fails this)."""
        async with self.gateway.installation(run.installation_id).session() as gh:
            await self._track(gh, run)

    async def _track(self, gh: InstallationClient, run: Run) -> None:
        page = self.links.url(run.id, run.created_at)

        async def latest() -> str:
            return tracking_body(await self.store.get(run.id), page_url=page)

        comment_url = await gh.upsert_latest(
            run.owner, run.repo, run.issue_number, run.marker, self.settings.bot_login, latest
        )
        ran = (now() - (run.started_at or now())).total_seconds()
        if run.terminal or ran >= self.settings.check_run_after_seconds:
            await self.checks.sync(gh, run.id, comment_url)

    def _budget(self, run: Run) -> Decimal:
        configured = run.repo_config.budget_usd if run.repo_config else None
        return configured or self.settings.run_budget_usd

    def could_dispatch(self, run: Run) -> bool:
        """A dispatch would do something: stories are ready within the run's own limit
        (capacity aside), or none is left to run and the run must be finished."""
        return bool(admit(run, self._max_parallel(run))) or finished(run)

    def _max_parallel(self, run: Run) -> int:
        return max_parallel_of(run, self.settings.max_parallel)


def tracking_body(run: Run, page_url: str | None = None) -> str:
    """The tracking comment for any state: the live checklist, or the final summary (so a
    late, debounced refresh can never replace the final word with a stale view)."""
    env = run.environment
    if run.terminal and env is not None and env.state == "failed" and run.state == "failed":
        return render_environment_failed(run.id, env)
    if run.terminal:
        return render_final_comment(run, pr_url=run.pr_url, page_url=page_url)
    assert run.plan is not None
    progress = {sid: record.progress() for sid, record in run.stories.items()}
    setup = run.repo_config.setup if run.repo_config else []
    return render_plan(
        run.id,
        run.plan,
        stats=run.plan_stats,
        state=run.state,
        auto_execute=True,
        progress=progress,
        page_url=page_url,
        environment=environment_lines(run.environment, setup),
    )


def _final_state(run: Run, landed: bool) -> RunState:
    if not landed:
        return "failed"
    return "checkpoint" if is_checkpoint(run) else "done"


def _to_running(run: Run) -> Run | None:
    if run.state != "ready":
        return None
    stories = run.stories or {s.id: StoryRecord() for s in (run.plan.stories if run.plan else [])}
    return run.model_copy(update={"state": "running", "stories": stories, "started_at": now()})


def needs_verification(run: Run) -> bool:
    """Verification runs when something landed and the repository configures `verify:`."""
    landed = any(r.state == "landed" for r in run.stories.values())
    return landed and bool(run.repo_config.verify if run.repo_config else [])

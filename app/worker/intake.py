"""The orchestrator's first job: a Trigger becomes an acknowledged, queued run.

Every step is idempotent, because arq re-runs a job whose worker died: the run id comes from
the delivery id, comments are found by hidden markers before they are created, and GitHub
answers a repeated reaction with the existing one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.core import replies
from app.core.report import render_help, render_plan, render_queued
from app.core.run import BRANCH_PREFIX, Run, issue_key, run_id_for
from app.core.scheduler import RetryRefused, cancel, reset_for_retry
from app.core.triggers import Trigger
from app.github import LABEL_RUNNING, WRITE_PERMISSIONS, InstallationClient
from app.logs import bind_log_context
from app.store import RunStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeResult:
    """What the intake did, for logs and tests."""

    outcome: str
    run_id: str | None = None


@dataclass(frozen=True)
class Intake:
    gh: InstallationClient
    store: RunStore
    bot_login: str
    trigger_label: str
    enqueue_plan: Callable[[str], Awaitable[None]]
    enqueue_start: Callable[[str], Awaitable[None]]
    refresh: Callable[[str], Awaitable[None]]
    """Re-dispatch and re-render a run after a command changed it."""
    edit_window: tuple[float, float] = (0.0, 0.0)
    """The tracking comment's debounce (base, cap): its creation counts as its first edit."""

    async def handle(self, trigger: Trigger) -> IntakeResult:
        t = trigger
        permission = await self.gh.permission(t.owner, t.repo, t.sender_login)
        if permission not in WRITE_PERMISSIONS:
            await self._reply(
                t, replies.permission_denied(t.sender_login, permission, self.trigger_label)
            )
            return IntakeResult("denied")

        if t.verb == "invalid":
            await self._reply(t, replies.invalid_command(t.command_error or "unknown command"))
            return IntakeResult("invalid")
        if t.verb == "help":
            await self._acknowledge(t)
            await self._reply(t, render_help())
            return IntakeResult("help")
        if t.verb in ("status", "cancel", "approve", "retry"):
            return await self._command_on_active_run(t)
        if t.is_pull_request:
            return await self._follow_up(t)
        return await self._start_run(t)

    async def _follow_up(self, t: Trigger) -> IntakeResult:
        """`/baro <instructions>` on a PR baro opened: a run that adds to its branch."""
        await self._acknowledge(t)
        pull = await self.gh.pull(t.owner, t.repo, t.issue_number)
        head_repo = pull.head.repo.full_name if pull.head.repo else None
        ours = (
            pull.user is not None
            and pull.user.login == self.bot_login
            and head_repo == pull.base.repo.full_name
            and pull.head.ref.startswith(BRANCH_PREFIX)
        )
        if not ours:
            await self._reply(t, replies.not_on_pull_requests())
            return IntakeResult("pull-request")
        if pull.state != "open":
            await self._reply(t, replies.follow_up_on_closed(pull.head.ref))
            return IntakeResult("pull-request-closed")
        if not t.instructions.strip():
            await self._reply(t, replies.follow_up_needs_instructions())
            return IntakeResult("follow-up-without-instructions")
        busy = await self._branch_busy(t, pull.head.ref, run_id_for(t.delivery_id))
        if busy is not None:
            return busy
        return await self._start_run(
            t, pr_branch=pull.head.ref, pr_number=pull.number, pr_url=pull.html_url
        )

    async def _start_run(
        self,
        t: Trigger,
        *,
        pr_branch: str | None = None,
        pr_number: int | None = None,
        pr_url: str | None = None,
    ) -> IntakeResult:
        run = Run(
            id=run_id_for(t.delivery_id),
            delivery_id=t.delivery_id,
            installation_id=t.installation_id,
            owner=t.owner,
            repo=t.repo,
            issue_number=t.issue_number,
            issue_title=t.issue_title,
            requester=t.sender_login,
            requester_id=t.sender_id,
            trigger=t.kind,
            plan_only=t.verb == "plan",
            instructions=t.instructions,
            pr_branch=pr_branch,
            pr_number=pr_number,
            pr_url=pr_url,
        )
        await self._supersede_waiting_plan(run)
        holder = await self.store.claim_issue(run.issue_key, run.id)
        if holder != run.id:
            if pr_branch is None:
                await self._acknowledge(t)  # on a command comment only: the reply answers
            other = await self.store.get(holder)
            await self._reply(t, replies.already_running(other.id, await self._comment_url(other)))
            return IntakeResult("already-running", other.id)

        run, _created = await self.store.create(run)
        bind_log_context(run=run.id)  # the rest of this job is about the new run
        # Planning first: the acknowledgement and the queued comment are spaced writes, and
        # nothing the run does waits for them (the first checklist edits this comment).
        if run.state == "queued":
            await self.enqueue_plan(run.id)
        if pr_branch is None:
            await self._acknowledge(t)
        via = f"the {self.trigger_label} label" if t.kind == "label" else "a /baro comment"
        body = render_queued(
            run.id, requester=run.requester, trigger=via, instructions=run.instructions
        )
        comment = await self.gh.comment_once(
            t.owner, t.repo, t.issue_number, run.marker, self.bot_login, body
        )
        base, cap = self.edit_window
        if run.comment_id is None and base > 0:
            # a checklist ready within the window edits this comment at the window's end
            await self.store.open_render_window(run.id, base, max(base, cap))
        if run.comment_id != comment.id:
            comment_id = comment.id
            run = await self.store.update(
                run.id, lambda r: r.model_copy(update={"comment_id": comment_id})
            )
            await self.store.append_event(run.id, "comment", comment_id=comment_id)
        log.info("run %s queued for %s", run.id, run.issue_key)
        return IntakeResult("queued", run.id)

    async def _supersede_waiting_plan(self, run: Run) -> None:
        """A new trigger replaces a plan that is only waiting for approval."""
        active = await self.store.active_run(run.issue_key)
        if active is None or active.id == run.id or active.state != "planned":
            return
        await self.store.update(active.id, _superseded)
        await self.store.append_event(active.id, "superseded", by=run.id)

    async def _command_on_active_run(self, t: Trigger) -> IntakeResult:
        await self._acknowledge(t)
        run = await self.store.active_run(issue_key(t.owner, t.repo, t.issue_number))
        if run is None:
            await self._reply(t, replies.no_run(t.verb))
            return IntakeResult("no-run")
        if t.verb == "status":
            await self._reply(t, self._status(run))
            return IntakeResult("status", run.id)
        if t.verb == "cancel":
            if run.terminal:
                await self._reply(t, replies.no_run(t.verb))
                return IntakeResult("no-run", run.id)
            await self.store.update(run.id, cancel)
            await self.store.append_event(run.id, "cancelled", by=t.sender_login)
            await self.gh.set_state_label(run.owner, run.repo, run.issue_number, None)
            await self.refresh(run.id)
            await self._reply(t, replies.cancelled(run.id))
            return IntakeResult("cancelled", run.id)
        if t.verb == "retry":
            if run.branch is not None:
                busy = await self._branch_busy(t, run.branch, run.id)
                if busy is not None:
                    return busy
            try:
                await self.store.update(run.id, lambda r: reset_for_retry(r, t.stories))
            except RetryRefused as exc:
                await self._reply(t, f"I cannot retry: {exc}.")
                return IntakeResult("retry-refused", run.id)
            await self.store.claim_issue(run.issue_key, run.id)
            await self.store.append_event(run.id, "retry", by=t.sender_login, only=t.stories)
            await self.gh.set_state_label(run.owner, run.repo, run.issue_number, LABEL_RUNNING)
            await self.refresh(run.id)
            return IntakeResult("retry", run.id)
        if t.verb == "approve" and run.state == "planned" and run.plan is not None:
            approved = await self.store.update(run.id, _approved)
            await self.store.append_event(run.id, "approved", by=t.sender_login)
            body = render_plan(
                run.id, run.plan, stats=run.plan_stats, state=approved.state, auto_execute=True
            )
            await self.gh.upsert_comment(
                t.owner, t.repo, t.issue_number, run.marker, self.bot_login, body
            )
            await self.enqueue_start(run.id)
            return IntakeResult("approved", run.id)
        await self._reply(t, replies.not_yet(t.verb, run.state))
        return IntakeResult("not-yet", run.id)

    async def _branch_busy(self, t: Trigger, branch: str, run_id: str) -> IntakeResult | None:
        """Claim `branch` for `run_id`; reply and return a result when another run has it."""
        holder = await self.store.claim_branch(t.owner, t.repo, branch, run_id)
        if holder == run_id:
            return None
        other = await self.store.get(holder)
        await self._reply(t, replies.branch_busy(branch, other.id, await self._comment_url(other)))
        return IntakeResult("branch-busy", other.id)

    def _status(self, run: Run) -> str:
        if run.plan is None:
            return replies.status(run.id, run.state)
        progress = {sid: r.progress() for sid, r in run.stories.items()}
        table = render_plan(
            run.id, run.plan, stats=run.plan_stats, state=run.state, progress=progress
        )
        # Without the run marker, so this reply is never mistaken for the tracking comment.
        return table.split("\n", 1)[1]

    async def _acknowledge(self, t: Trigger) -> None:
        """👀 on the trigger comment, marking which command was seen. A label gets none: the
        comment the bot posts next answers it, and a reaction would be one more spaced write
        of the installation's budget (GitHub: about one a second)."""
        if t.comment_id is not None:
            await self.gh.react_to_comment(t.owner, t.repo, t.comment_id, "eyes")

    async def _reply(self, t: Trigger, text: str) -> None:
        marker = replies.reply_marker(t.delivery_id)
        await self.gh.upsert_comment(
            t.owner,
            t.repo,
            t.issue_number,
            marker,
            self.bot_login,
            replies.with_marker(marker, text),
        )

    async def _comment_url(self, run: Run) -> str | None:
        if run.comment_id is None:
            return None
        comment = await self.gh.find_comment(
            run.owner, run.repo, run.issue_number, run.marker, self.bot_login
        )
        return comment.html_url if comment is not None else None


def _superseded(run: Run) -> Run | None:
    if run.state != "planned":
        return None
    return run.model_copy(update={"state": "cancelled", "failure": "superseded by a new trigger"})


def _approved(run: Run) -> Run | None:
    return run.model_copy(update={"state": "ready"}) if run.state == "planned" else None

"""The tracking comment once a run has ended: headline, the PR, totals, the checklist (pure)."""

from __future__ import annotations

import re

from app.core.markdown import (
    COMMENT_LIMIT,
    escape_inline,
    fit_comment,
    format_duration,
    run_page_line,
)
from app.core.plan import RunState, StoryProgress
from app.core.report import checklist_line, commands_line, marker, next_commands
from app.core.run import Run, StoryRecord
from app.core.run_facts import (
    count_state,
    is_checkpoint,
    rows_of,
    story_ran,
    total_usage,
    wall_seconds,
)

_URL = re.compile(r"https://[^\s<>()\[\]`\"']+")


def _final_state(run: Run) -> RunState:
    """The run's own terminal state, or one derived from the stories if it has none yet."""
    if run.state in ("done", "checkpoint", "failed", "cancelled"):
        return run.state
    if not is_checkpoint(run):
        return "done"
    return "checkpoint" if any(r.record.state == "landed" for r in rows_of(run)) else "failed"


def _headline(state: RunState, landed: int, total: int) -> str:
    text = {
        "done": f"✅ Done — {landed}/{total} stories landed",
        "checkpoint": f"⚠️ Checkpoint — {landed}/{total} stories landed",
        "failed": f"❌ Failed — {landed}/{total} stories landed",
        "cancelled": f"⏹ Cancelled — {landed}/{total} stories landed",
    }
    return text.get(state, f"{landed}/{total} stories landed")


def _pr_line(run: Run, pr_url: str | None, state: RunState, landed: int) -> str:
    if pr_url:
        link = pr_url if _URL.fullmatch(pr_url) else escape_inline(pr_url, 200)
        draft = " (a checkpoint: review what landed)" if state == "checkpoint" else ""
        return f"**Pull request:** {link}{draft}"
    if landed == 0 and state == "cancelled":
        return (
            "**No pull request:** the run was cancelled before any story landed, so there is "
            "nothing to review. Comment `/baro` to start again."
        )
    if landed == 0 and run.pr_branch is not None:
        why = f" ({escape_inline(run.failure, 300)})" if run.failure else ""
        return (
            f"**Nothing added:** no story of this follow-up landed{why}, so the pull request "
            "is as it was. Comment `/baro retry` to retry the failed stories, or "
            "`/baro <instructions>` to try something else."
        )
    if landed == 0:
        why = f" ({escape_inline(run.failure, 300)})" if run.failure else ""
        return (
            f"**No pull request:** no story landed{why}, so there is nothing to review. Comment "
            "`/baro retry` to retry the failed stories, or edit the issue and comment "
            "`/baro plan` to plan again."
        )
    branch = f" <code>{escape_inline(run.branch, 120)}</code>" if run.branch else ""
    why = f" ({escape_inline(run.failure, 300)})" if run.failure else ""
    return (
        f"**No pull request yet:** the {landed} stories that landed are on the branch{branch}, "
        f"but the pull request was not opened{why}. Open one from that branch by hand, or "
        "comment `/baro retry` to try again."
    )


def _progress(rec: StoryRecord) -> StoryProgress:
    """A story that never ran cost nothing worth showing: no "$0.00" next to "blocked"."""
    progress = rec.progress()
    return progress if story_ran(rec) else progress.model_copy(update={"cost_usd": None})


def render_final_comment(
    run: Run, *, pr_url: str | None, limit: int = COMMENT_LIMIT, page_url: str | None = None
) -> str:
    """The tracking comment once a run ends: headline, PR link, totals and the checklist."""
    rows = rows_of(run)
    state = _final_state(run)
    landed = count_state(rows, "landed")
    total = total_usage(run)
    red = [v for v in run.verification if not v.passed]
    if not run.verification:
        checks = "none run"
    elif red:
        checks = f"❌ {len(red)} of {len(run.verification)} failed"
    else:
        checks = f"✅ {len(run.verification)} passed"
    lines = [
        marker(run.id),
        f"### {_headline(state, landed, len(rows))}",
        "",
        _pr_line(run, pr_url, state, landed),
        "",
        "| Landed | Failed | Blocked | Cancelled | Tokens | Cost | Wall time | Checks |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {landed} | {count_state(rows, 'failed')} | {count_state(rows, 'blocked')} "
        f"| {count_state(rows, 'cancelled')} | {total.tokens:,} | {total.cost_text()} "
        f"| {format_duration(wall_seconds(run))} | {checks} |",
        *run_page_line(page_url),
    ]
    checklist = [checklist_line(r.story, _progress(r.record)) for r in rows if r.story]
    if checklist:
        lines += ["", *checklist]
    lines += ["", commands_line(next_commands(state, True))]
    return fit_comment("\n".join(lines), limit)

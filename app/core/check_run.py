"""The run's check run on its branch (pure): in progress with the live checklist, then a
conclusion with the totals, and links to the run page and the tracking comment.

Maintainers watch pull requests through their checks, so the run shows there too: `baro`
on the run branch's head commit. A check run belongs to one commit; when a story lands the
head moves and the run's check moves with it (the one left behind is closed as `neutral`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from app.core.markdown import fit_comment, format_duration
from app.core.plan import RunState
from app.core.report import checklist_line
from app.core.run import Run
from app.core.run_facts import count_state, rows_of, story_ran, total_usage, wall_seconds

__all__ = [
    "CHECK_NAME",
    "CheckOutput",
    "CheckRef",
    "render_check",
    "render_superseded",
]

CHECK_NAME = "baro"
SUMMARY_LIMIT = 65_535
"""GitHub's limit on a check run's `output.summary`."""
Conclusion = Literal["success", "failure", "cancelled", "neutral"]
CONCLUSIONS: dict[RunState, Conclusion] = {
    "done": "success",
    "checkpoint": "failure",
    "failed": "failure",
    "cancelled": "cancelled",
}
_TITLES: dict[str, str] = {
    "done": "✅ Done",
    "checkpoint": "⚠️ Checkpoint",
    "failed": "❌ Failed",
    "cancelled": "🚫 Cancelled",
    "finalizing": "🔎 Verifying",
}


@dataclass(frozen=True)
class CheckOutput:
    """One write of the check run: its status, conclusion and output."""

    status: Literal["in_progress", "completed"]
    conclusion: Conclusion | None
    title: str
    summary: str

    @property
    def digest(self) -> str:
        """What was written, so an unchanged state costs no write."""
        text = "\0".join([self.status, self.conclusion or "", self.title, self.summary])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class CheckRef(BaseModel):
    """The run's check run as last written (kept beside the run record)."""

    id: int = 0
    sha: str = ""
    completed: bool = False
    digest: str = ""
    refused: bool = False
    """GitHub refused check runs for this run (no `checks` permission): stop asking."""


def _links(page_url: str | None, comment_url: str | None) -> list[str]:
    links = []
    if page_url:
        links.append(f"📈 [Run page]({page_url})")
    if comment_url:
        links.append(f"💬 [Tracking comment]({comment_url})")
    return [" · ".join(links), ""] if links else []


def render_check(run: Run, *, page_url: str | None, comment_url: str | None) -> CheckOutput:
    """The check run for the run as it is now."""
    rows = rows_of(run)
    landed = count_state(rows, "landed")
    stories = f"{landed}/{len(rows)} stories landed"
    conclusion = CONCLUSIONS.get(run.state) if run.terminal else None
    title = f"{_TITLES.get(run.state, '🚀 Running')} — {stories}"
    lines: list[str] = []
    if run.terminal:
        usage = total_usage(run)
        lines += [
            f"**{stories}** · {count_state(rows, 'failed')} failed · "
            f"{count_state(rows, 'blocked')} blocked · {usage.tokens:,} tokens · "
            f"{usage.cost_text()} · wall {format_duration(wall_seconds(run))}",
            "",
        ]
    lines += _links(page_url, comment_url)
    for row in rows:
        if row.story is None:
            continue
        progress = row.record.progress()
        if not story_ran(row.record):
            progress = progress.model_copy(update={"cost_usd": None})
        lines.append(checklist_line(row.story, progress))
    summary = fit_comment("\n".join(lines).strip() or stories, SUMMARY_LIMIT)
    if conclusion is None:
        return CheckOutput("in_progress", None, title, summary)
    return CheckOutput("completed", conclusion, title, summary)


def render_superseded(head_sha: str) -> CheckOutput:
    """The check run a moved head left behind: closed, pointing at where the run went on."""
    return CheckOutput(
        "completed",
        "neutral",
        "Superseded by a newer commit",
        f"The run went on at `{head_sha[:12]}`; its check run is there.",
    )

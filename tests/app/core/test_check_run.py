"""The check run's status, conclusion and text for each state of a run (pure)."""

from __future__ import annotations

import pytest

from app.core.check_run import CONCLUSIONS, render_check, render_superseded
from tests.app.core.test_timeline import HOSTILE, make_run, record

PAGE = "https://baro.example/runs/r0123456789a?token=1.x"
COMMENT = "https://github.com/acme/stats/issues/7#issuecomment-1"


def test_in_progress_shows_the_live_checklist_and_the_links() -> None:
    run = make_run("running", S1=record("landed", 1), S2=record("running", 1))
    out = render_check(run, page_url=PAGE, comment_url=COMMENT)
    assert (out.status, out.conclusion) == ("in_progress", None)
    assert out.title == "🚀 Running — 1/3 stories landed"
    assert f"[Run page]({PAGE})" in out.summary and f"[Tracking comment]({COMMENT})" in out.summary
    assert "- [x] **S1**" in out.summary and "⏳ running" in out.summary
    assert "<script>" not in out.summary and HOSTILE not in out.summary  # escaped Markdown
    assert out.digest == render_check(run, page_url=PAGE, comment_url=COMMENT).digest
    later = make_run("running", S1=record("landed", 1), S2=record("landed", 1))
    assert render_check(later, page_url=PAGE, comment_url=COMMENT).digest != out.digest


@pytest.mark.parametrize(
    ("state", "conclusion"),
    [("done", "success"), ("checkpoint", "failure"), ("cancelled", "cancelled")],
)
def test_the_end_has_a_conclusion_and_the_totals(state: str, conclusion: str) -> None:
    run = make_run(state, S1=record("landed", 1), S2=record("failed", 3), S3=record("blocked", 0))
    out = render_check(run, page_url=None, comment_url=COMMENT)
    assert (out.status, out.conclusion) == ("completed", conclusion)
    assert CONCLUSIONS[state] == conclusion  # type: ignore[index]
    assert "**1/3 stories landed** · 1 failed · 1 blocked" in out.summary
    assert "Run page" not in out.summary  # no public URL, no link


def test_a_check_run_left_behind_is_neutral() -> None:
    out = render_superseded("a" * 40)
    assert (out.status, out.conclusion) == ("completed", "neutral")
    assert "aaaaaaaaaaaa" in out.summary

"""Attempts and replay from the event log; the run page's data and HTML (pure)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.plan import Plan
from app.core.run import Run, StoryRecord
from app.core.run_page import render_run_page
from app.core.run_view import run_view
from app.core.timeline import attempts_by_story, attempts_from_events, replay_changes

T0 = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
HOSTILE = '<img src=x onerror="alert(1)"><script>window.pwned=1</script> & "quotes"'


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def ev(kind: str, seconds: float, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "at": at(seconds), **data}


def story(sid: str, deps: list[str], title: str | None = None) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title or f"Story {sid}",
        "description": "d",
        "depends_on": deps,
        "writes": [f"{sid}.txt"],
        "acceptance": ["a"],
        "tier": "light",
    }


PLAN = Plan.model_validate(
    {
        "summary": "Three stories.",
        "design_note": "n",
        "stories": [story("S1", []), story("S2", [], HOSTILE), story("S3", ["S1", "S2"])],
    }
)

EVENTS = [
    ev("created", -30, state="queued"),
    ev("running", 0),
    ev("dispatched", 0.1, story="S1", attempt=1),
    ev("dispatched", 0.1, story="S2", attempt=1),
    ev("story_started", 0.5, story="S1", attempt=1, tier="light", model="flash"),
    ev("story_started", 0.6, story="S2", attempt=1, tier="light", model="flash"),
    ev(
        "story_failed",
        3,
        story="S2",
        attempt=1,
        failure="verification",
        message="tests failed",
        tier="light",
        model="flash",
        input_tokens=900,
        cached_tokens=100,
        output_tokens=50,
        cost_usd=0.001,
    ),
    ev("retry", 3.1, story="S2", failure="verification"),
    ev("dispatched", 3.2, story="S2", attempt=2),
    ev("story_started", 3.4, story="S2", attempt=2, tier="standard", model="pro"),
    ev(
        "story_landed",
        4,
        story="S1",
        attempt=1,
        sha="a" * 40,
        input_tokens=1000,
        output_tokens=80,
        cost_usd=None,
    ),
    ev("story_landed", 6, story="S2", attempt=2, sha="b" * 40, input_tokens=2000, cost_usd=0.01),
    ev("story_landed", 6.5, story="S2", attempt=2, sha="c" * 40),  # a repeated report
    ev("dispatched", 6.1, story="S3", attempt=1),
]


def record(state: str, attempts: int, **extra: Any) -> StoryRecord:
    return StoryRecord.model_validate({"state": state, "attempts": attempts, **extra})


def make_run(state: str = "running", **stories: StoryRecord) -> Run:
    return Run(
        id="r0123456789a",
        delivery_id="d",
        installation_id=1,
        owner="acme",
        repo="stats",
        issue_number=7,
        issue_title="Add </title><script>alert(1)</script>",
        requester="maintainer",
        trigger="label",
        state=state,  # type: ignore[arg-type]
        plan=PLAN,
        stories=stories,
        started_at=T0,
        created_at=T0 - timedelta(seconds=30),
    )


def test_every_attempt_is_read_back_with_its_own_usage() -> None:
    attempts = attempts_from_events(EVENTS)
    assert [(a.story, a.attempt, a.outcome) for a in attempts] == [
        ("S1", 1, "landed"),
        ("S2", 1, "failed"),
        ("S2", 2, "landed"),
        ("S3", 1, "queued"),
    ]
    first, second = attempts_by_story(attempts)["S2"]
    assert (first.tier, first.model, second.tier, second.model) == (
        "light",
        "flash",
        "standard",
        "pro",
    )
    assert (first.failure_kind, first.message) == ("verification", "tests failed")
    assert (first.input_tokens, first.cached_tokens, first.output_tokens) == (900, 100, 50)
    assert first.duration_s == 2.4
    assert second.sha == "b" * 40  # the first report of an end wins
    assert attempts[0].cost_usd is None  # unknown price stays unknown
    ended = attempts_from_events(EVENTS, ended=True)
    assert ended[-1].outcome == "unfinished"


def test_old_logs_without_usage_still_read() -> None:
    old = [
        ev("dispatched", 0, story="S1", attempt=1),
        ev("story_landed", 2, story="S1", attempt=1, sha="a" * 7, failure=None),
    ]
    (only,) = attempts_from_events(old)
    assert (only.outcome, only.tokens, only.cost_usd, only.model) == ("landed", 0, 0.0, None)
    assert only.duration_s == 2.0


def test_replay_walks_the_states_and_ends_on_the_record() -> None:
    run = make_run(
        "running",
        S1=record("landed", 1),
        S2=record("landed", 2),
        S3=record("running", 1),
    )
    changes = replay_changes(run, EVENTS, T0, T0 + timedelta(seconds=8))
    s2 = [(c.t, c.state) for c in changes if c.story == "S2"]
    assert s2 == [
        (0.1, "queued"),
        (0.6, "running"),
        (3.0, "failed"),
        (3.1, "pending"),
        (3.2, "queued"),
        (3.4, "running"),
        (6.0, "landed"),
    ]
    assert [c.state for c in changes if c.story == "S3"] == ["queued"]  # not claimed yet
    assert all(c.t >= 0 for c in changes)


def test_giving_up_blocks_what_depends_on_it() -> None:
    events = [
        ev("running", 0),
        ev("dispatched", 0, story="S1", attempt=1),
        ev("story_failed", 1, story="S1", attempt=1, failure="workflow"),
        ev("gave_up", 1.5, story="S1", failure="workflow"),
        ev("finished", 2, state="checkpoint", pr=3),
    ]
    run = make_run(
        "checkpoint", S1=record("failed", 1), S2=record("landed", 1), S3=record("blocked", 0)
    )
    changes = replay_changes(run, events, T0, T0 + timedelta(seconds=2))
    assert (1.5, "S3", "blocked") in [(c.t, c.story, c.state) for c in changes]
    assert [c.state for c in changes if c.story is None][-1] == "checkpoint"


def test_view_and_page_show_everything_and_escape_it() -> None:
    run = make_run(
        "running",
        S1=record("landed", 1, model="flash", started_at=T0, finished_at=T0 + timedelta(seconds=4)),
        S2=record("running", 2),
        S3=record("pending", 0),
    )
    view = run_view(run, EVENTS, now=T0 + timedelta(seconds=10))
    assert view["live"] is True
    assert view["levels"] == [["S1", "S2"], ["S3"]]
    assert view["critical_path"][-1] == "S3"
    assert view["elapsed_s"] == 10.0
    assert view["totals"]["attempts"] == 4
    assert [s["title"] for s in view["stories"]][1] == HOSTILE  # data stays as it came
    page = render_run_page(
        view, json_url="/runs/x.json?token=1.a", script_url="/s.js", style_url="/s.css"
    )
    assert "<script>window.pwned" not in page
    assert "<img" not in page
    assert html.escape(HOSTILE)[:30] in page
    assert "</title><script>" not in page
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script src="/s.js" defer>']  # no inline script
    assert "style=" not in page  # no inline style (CSP style-src 'self')
    assert 'data-story="S3"' in page
    assert page.count('class="edge critical"') == 1

"""What the run page shows, as data: the DAG with live states, every attempt, the critical path
and the changes a replay steps through (pure).

`/runs/<id>.json` serves this as it is and the page's script draws from it, so the page and the
JSON can never disagree. Text from the issue, the plan or the models is left as it came: the
HTML renderer (`app.core.run_page`) escapes it and the script only ever sets it as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.core.dag import levels
from app.core.markdown import format_cost, format_duration
from app.core.run import Run
from app.core.run_facts import count_state, critical_chain, rows_of, total_usage, wall_seconds
from app.core.timeline import Attempt, Event, attempts_from_events, event_time, replay_changes

__all__ = ["HEADLINES", "origin_of", "run_view"]

HEADLINES: dict[str, str] = {
    "queued": "Queued",
    "planning": "Planning",
    "planned": "Planned, waiting for approval",
    "ready": "Starting",
    "running": "Running",
    "finalizing": "Verifying and opening the pull request",
    "done": "Done",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "checkpoint": "Checkpoint",
}


def origin_of(run: Run, events: Sequence[Event]) -> datetime:
    """Time zero of the timeline: when the run started executing (else its first event)."""
    if run.started_at is not None:
        return run.started_at
    times = [t for e in events if (t := event_time(e)) is not None]
    return min(times) if times else run.created_at


def _seconds(at: datetime | None, origin: datetime) -> float | None:
    return None if at is None else round(max((at - origin).total_seconds(), 0.0), 3)


def _attempt(a: Attempt, origin: datetime) -> dict[str, Any]:
    return {
        "story": a.story,
        "attempt": a.attempt,
        "tier": a.tier,
        "model": a.model,
        "queued_s": _seconds(a.dispatched_at, origin),
        "started_s": _seconds(a.started_at, origin),
        "finished_s": _seconds(a.finished_at, origin),
        "outcome": a.outcome,
        "failure_kind": a.failure_kind,
        "message": a.message,
        "input_tokens": a.input_tokens,
        "cached_tokens": a.cached_tokens,
        "output_tokens": a.output_tokens,
        "tokens": a.tokens,
        "cost_usd": a.cost_usd,
        "cost": format_cost(a.cost_usd) if a.outcome in ("landed", "failed") else "–",
        "duration": format_duration(a.duration_s) if a.duration_s is not None else "–",
    }


def run_view(run: Run, events: Sequence[Event], *, now: datetime) -> dict[str, Any]:
    """The run page's data at `now` (a live run's bars and clock run up to it)."""
    origin = origin_of(run, events)
    end = (run.finished_at or now) if run.terminal else now
    attempts = attempts_from_events(events, ended=run.terminal)
    rows = rows_of(run)
    path, bound, exact = critical_chain(run)
    on_path = set(path)
    depth = (
        {sid: i for i, level in enumerate(levels(run.plan)) for sid in level} if run.plan else {}
    )
    level_ids = levels(run.plan) if run.plan else []
    extra = [r.id for r in rows if r.id not in depth]
    if extra:  # records outside the plan get a column of their own
        level_ids = [*level_ids, extra]
        depth.update({sid: len(level_ids) - 1 for sid in extra})
    usage = total_usage(run)
    stories = []
    for row in rows:
        record = row.record
        tried = [a for a in attempts if a.story == row.id]
        stories.append(
            {
                "id": row.id,
                "title": row.title,
                "tier": row.tier,
                "depends_on": list(row.story.depends_on) if row.story else [],
                "level": depth.get(row.id, 0),
                "state": record.state,
                "critical": row.id in on_path,
                "attempts": max(record.attempts, len(tried)),
                "model": record.model,
                "cost": format_cost(record.cost_usd) if record.attempts else "–",
                "duration": format_duration(record.duration_s) if record.duration_s else "–",
                "sha": record.sha,
                "note": record.failure,
            }
        )
    return {
        "id": run.id,
        "repo": f"{run.owner}/{run.repo}",
        "issue_number": run.issue_number,
        "issue_title": run.issue_title,
        "state": run.state,
        "headline": HEADLINES.get(run.state, run.state),
        "live": not run.terminal,
        "branch": run.branch,
        "pr_url": run.pr_url,
        "pr_number": run.pr_number,
        "summary": run.plan.summary if run.plan else None,
        "origin": origin.isoformat(),
        "elapsed_s": round(max((end - origin).total_seconds(), 0.0), 3),
        "totals": {
            "stories": len(rows),
            "landed": count_state(rows, "landed"),
            "failed": count_state(rows, "failed"),
            "blocked": count_state(rows, "blocked"),
            "cancelled": count_state(rows, "cancelled"),
            "attempts": len(attempts),
            "tokens": usage.tokens,
            "cost": usage.cost_text(),
            "wall": format_duration(wall_seconds(run)) if run.terminal else "–",
        },
        "levels": level_ids,
        "critical_path": path,
        "critical_bound": format_duration(bound) if bound is not None else "–",
        "critical_measured": exact,
        "stories": stories,
        "attempts": [_attempt(a, origin) for a in attempts],
        "changes": [c.model_dump() for c in replay_changes(run, events, origin, end)],
        "version": f"{run.version}.{len(events)}",
    }

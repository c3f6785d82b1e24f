"""Every attempt of every story, and the run's state changes in order, from its event log.

The run record keeps one row per story: its latest attempt's times and the sums over all
attempts. The event log (`app.store.RunStore.append_event`) keeps each attempt on its own:
`dispatched` (the orchestrator queued it), `story_started` (a runner claimed it, with the tier
and model), `story_landed` / `story_failed` (its end, with that attempt's tokens and cost).
This module reads those back (pure), for the run page's timeline and replay and for any
report that counts every attempt. Logs written before attempts carried their usage still
read: the missing facts stay at their defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from app.core.dag import dependency_closure
from app.core.run import Run

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Change",
    "attempts_by_story",
    "attempts_from_events",
    "event_time",
    "replay_changes",
]

Event = Mapping[str, Any]
AttemptOutcome = Literal["queued", "running", "landed", "failed", "unfinished"]
"""`unfinished`: the run ended while the attempt was queued or running (cancelled, stalled)."""

_ENDS = {"story_landed": "landed", "story_failed": "failed"}


class Attempt(BaseModel):
    """One attempt at one story: when it was queued, started and ended, on what, for how much."""

    model_config = ConfigDict(frozen=True)

    story: str
    attempt: int
    tier: str | None = None
    model: str | None = None
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: AttemptOutcome = "queued"
    failure_kind: str | None = None
    message: str | None = None
    sha: str | None = None
    input_tokens: int = 0
    """Whole prompt tokens of this attempt (uncached, cache reads and writes)."""
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    """None when a call of this attempt had no known price (never shown as $0)."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def duration_s(self) -> float | None:
        """Runner start (or dispatch, when no start was logged) to the end."""
        begin = self.started_at or self.dispatched_at
        if begin is None or self.finished_at is None:
            return None
        return max((self.finished_at - begin).total_seconds(), 0.0)


def event_time(event: Event) -> datetime | None:
    raw = event.get("at")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _cost(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def attempts_from_events(events: Iterable[Event], *, ended: bool = False) -> list[Attempt]:
    """The attempts in the order they were dispatched. The first end reported for an attempt
    is its end; with `ended` (the run is over) an attempt that never ended is `unfinished`."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for event in events:
        story, number = event.get("story"), event.get("attempt")
        if not isinstance(story, str) or not isinstance(number, int):
            continue
        kind, at = event.get("kind"), event_time(event)
        if kind not in ("dispatched", "story_started", *_ENDS):
            continue
        current = found.setdefault((story, number), {"story": story, "attempt": number})
        if kind == "dispatched":
            current.setdefault("dispatched_at", at)
        elif kind == "story_started":
            if "started_at" not in current:
                current.update(started_at=at, outcome="running")
            for name in ("tier", "model"):
                if _text(event.get(name)) and name not in current:
                    current[name] = event[name]
        elif "finished_at" not in current:
            current.update(
                finished_at=at,
                outcome=_ENDS[kind],
                failure_kind=_text(event.get("failure")) if kind == "story_failed" else None,
                message=_text(event.get("message")),
                sha=_text(event.get("sha")),
                input_tokens=_int(event.get("input_tokens")),
                cached_tokens=_int(event.get("cached_tokens")),
                output_tokens=_int(event.get("output_tokens")),
                cost_usd=_cost(event.get("cost_usd", 0.0)),
            )
            for name in ("tier", "model"):
                if _text(event.get(name)):
                    current.setdefault(name, event[name])
    attempts = [Attempt.model_validate(facts) for facts in found.values()]
    if ended:
        attempts = [
            a.model_copy(update={"outcome": "unfinished"})
            if a.outcome in ("queued", "running")
            else a
            for a in attempts
        ]
    return attempts


def attempts_by_story(attempts: Iterable[Attempt]) -> dict[str, list[Attempt]]:
    out: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        out.setdefault(attempt.story, []).append(attempt)
    for items in out.values():
        items.sort(key=lambda a: a.attempt)
    return out


class Change(BaseModel):
    """At `t` seconds after the run's origin, `story` (None: the run) went to `state`."""

    model_config = ConfigDict(frozen=True)

    t: float
    story: str | None
    state: str


_STORY_EVENTS = {
    "dispatched": "queued",
    "story_started": "running",
    "story_landed": "landed",
    "story_failed": "failed",
}
_RUN_EVENTS = {
    "running": "running",
    "finalizing": "finalizing",
    "fix_story": "running",
    "cancelled": "cancelled",
    "stalled": "failed",
    "failed": "failed",
}


def replay_changes(
    run: Run, events: Sequence[Event], origin: datetime, end: datetime
) -> list[Change]:
    """Story and run states as they changed, for replaying the run; ends on the record's
    states at `end`, so a replay always finishes where the run is (events written before a
    crash, or kinds this reader does not know, cannot leave it elsewhere)."""
    stories = list(run.stories)
    state: dict[str | None, str] = {sid: "pending" for sid in stories}
    state[None] = "running"
    changes: list[Change] = []

    def offset(at: datetime | None) -> float:
        return max(((at or origin) - origin).total_seconds(), 0.0)

    def change(t: float, story: str | None, new: str) -> None:
        if state.get(story) != new:
            state[story] = new
            changes.append(Change(t=round(t, 3), story=story, state=new))

    for event in events:
        kind, story = event.get("kind"), event.get("story")
        t = offset(event_time(event))
        if kind in _STORY_EVENTS and isinstance(story, str) and story in state:
            change(t, story, _STORY_EVENTS[str(kind)])
        elif kind == "retry" and isinstance(story, str) and story in state:
            change(t, story, "pending")  # the orchestrator will dispatch it again
        elif kind == "retry":  # `/baro retry`: what failed or was held back goes again
            for sid in stories:
                if state[sid] in ("failed", "blocked", "cancelled"):
                    change(t, sid, "pending")
            change(t, None, "running")
        elif kind == "gave_up" and isinstance(story, str) and story in state:
            change(t, story, "failed")
            if run.plan is not None and story in run.plan.ids:
                for sid in dependency_closure(run.plan, story):
                    if state.get(sid) == "pending":
                        change(t, sid, "blocked")
        elif kind == "finished":
            change(t, None, str(event.get("state") or "done"))
        elif kind in _RUN_EVENTS and t > 0:
            change(t, None, _RUN_EVENTS[str(kind)])
    last = max([offset(end), *(c.t for c in changes)])
    for sid, record in run.stories.items():
        if not (record.state == "running" and state.get(sid) == "queued"):  # not claimed yet
            change(last, sid, record.state)
    change(last, None, run.state)
    return changes

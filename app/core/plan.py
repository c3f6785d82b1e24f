"""The plan a planner model produces, and the state names of a run.

`parse_plan` is the only way raw model output becomes a `Plan`: it either returns a valid plan
or a list of exact, line-per-problem errors written to be sent back to the model for repair.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from app.core.dag import find_cycle

__all__ = [
    "MAX_STORIES",
    "TIERS",
    "Plan",
    "PlanStats",
    "RunState",
    "Story",
    "StoryProgress",
    "StoryState",
    "Tier",
    "parse_plan",
]

Tier = Literal["light", "standard", "heavy"]
TIERS: tuple[Tier, ...] = ("light", "standard", "heavy")
RunState = Literal[
    "queued",
    "planning",
    "planned",
    "ready",
    "running",
    "finalizing",
    "done",
    "failed",
    "cancelled",
    "checkpoint",
]
StoryState = Literal["pending", "running", "landed", "failed", "blocked", "cancelled"]

MAX_STORIES = 25
MAX_ERRORS = 30  # more than this and the model should start over, not read a wall of text
_STORY_ID = re.compile(r"S[1-9][0-9]*")


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _story_id(value: str) -> str:
    if not _STORY_ID.fullmatch(value):
        raise ValueError(f"{_show(value)} is not a story id (use S1, S2, S3, …)")
    return value


def _relative_path(value: str) -> str:
    if value.startswith(("/", "\\")) or ".." in re.split(r"[\\/]", value):
        raise ValueError(f"{_show(value)} must be a path relative to the repository root")
    return value


def _tier(value: object) -> object:
    if value not in TIERS:
        raise ValueError(f"{_show(value)} is not one of {', '.join(TIERS)}")
    return value


def _at_least_one(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("must have at least one entry")
    return value


def _unique(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value))


Text = Annotated[str, AfterValidator(_non_empty)]
StoryId = Annotated[str, AfterValidator(_story_id)]
FilePath = Annotated[str, AfterValidator(_non_empty), AfterValidator(_relative_path)]


class Story(BaseModel):
    """One small unit of work: becomes exactly one commit `S4: <title>` on the run branch."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    id: StoryId
    title: Text
    description: Text
    depends_on: Annotated[list[str], AfterValidator(_unique)] = Field(default_factory=list)
    writes: Annotated[list[FilePath], AfterValidator(_at_least_one), AfterValidator(_unique)]
    acceptance: Annotated[list[Text], AfterValidator(_at_least_one)]
    tests: list[Text] = Field(default_factory=list)
    tier: Annotated[Tier, BeforeValidator(_tier)]


class Plan(BaseModel):
    """A validated DAG of 1–25 stories plus the design note every story is told to follow."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    summary: Text
    design_note: Text
    stories: list[Story]

    @model_validator(mode="after")
    def _graph_rules(self) -> Plan:
        errors = _rule_errors([(s.id, s.depends_on) for s in self.stories])
        if errors:
            raise PydanticCustomError("plan_rules", "{errors}", {"errors": "; ".join(errors)})
        return self

    def story(self, story_id: str) -> Story:
        """The story with this id (KeyError if none)."""
        for story in self.stories:
            if story.id == story_id:
                return story
        raise KeyError(story_id)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.stories]


class PlanStats(BaseModel):
    """What planning cost. `cost_usd=None` means unknown price, which is never shown as $0."""

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    duration_s: float | None = None
    repair_rounds: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class StoryProgress(BaseModel):
    """The per-story facts the tracking comment shows next to a checklist line."""

    state: StoryState = "pending"
    duration_s: float | None = None
    model: str | None = None
    cost_usd: float | None = None
    attempts: int = 0
    note: str | None = None


# --- validation of raw model output -------------------------------------------------------


def _rule_errors(entries: Sequence[tuple[str | None, Sequence[object]]]) -> list[str]:
    """Count, unique ids, known deps, no self-dependency, no cycle — in message form."""
    errors: list[str] = []
    if not entries:
        errors.append("too few stories: 0 (at least 1)")
    elif len(entries) > MAX_STORIES:
        errors.append(f"too many stories: {len(entries)} (at most {MAX_STORIES})")
    first_at: dict[str, int] = {}
    for i, (sid, _) in enumerate(entries):
        if sid is None:
            continue
        if sid in first_at:
            errors.append(
                f'stories[{i}].id: duplicate story id "{sid}" (also stories[{first_at[sid]}])'
            )
        else:
            first_at[sid] = i
    graph: dict[str, list[str]] = {}
    for i, (sid, deps) in enumerate(entries):
        good: list[str] = []
        for dep in deps:
            if not isinstance(dep, str):
                continue  # the type error is reported by pydantic
            if dep == sid:
                errors.append(
                    f'stories[{i}].depends_on: a story may not depend on itself ("{dep}")'
                )
            elif dep not in first_at:
                errors.append(f"stories[{i}].depends_on: unknown story {_show(dep)}")
            else:
                good.append(dep)
        if sid is not None and first_at[sid] == i:
            graph[sid] = good
    cycle = find_cycle(graph)
    if cycle:
        errors.append("cycle: " + " → ".join(cycle))
    return errors


def _raw_entries(stories: list[Any]) -> list[tuple[str | None, Sequence[object]]]:
    """Best-effort (id, deps) from unvalidated stories, so graph errors come in round one."""
    entries: list[tuple[str | None, Sequence[object]]] = []
    for raw in stories:
        sid: str | None = None
        deps: Sequence[object] = ()
        if isinstance(raw, dict):
            rid = raw.get("id")
            sid = rid.strip() if isinstance(rid, str) and rid.strip() else None
            rdeps = raw.get("depends_on")
            if isinstance(rdeps, list):
                deps = list(dict.fromkeys(d.strip() if isinstance(d, str) else d for d in rdeps))
        entries.append((sid, deps))
    return entries


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "model_attributes_type": "must be an object",
    "int_type": "must be an integer",
}


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "plan"


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str((err.get("ctx") or {}).get("error", err["msg"]))
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]}, got {_show(err['input'])}"
    msg = err["msg"]
    return msg[:1].lower() + msg[1:]


def _strip_fence(text: str) -> str:
    text = text.strip()
    match = re.fullmatch(r"```[\w-]*\n(.*)\n```", text, re.DOTALL)
    return match.group(1) if match else text


def parse_plan(raw: object) -> Plan | list[str]:
    """Validate a planner's output (dict, or JSON text) into a `Plan`, else list the errors.

    Errors look like `stories[2].depends_on: unknown story "S9"` or `cycle: S2 → S4 → S2`
    (arrows follow depends_on), one problem per string, in a stable order.
    """
    if isinstance(raw, str | bytes):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            raw = json.loads(_strip_fence(text))
        except json.JSONDecodeError as exc:
            return [f"plan: not valid JSON: {exc}"]
    if not isinstance(raw, dict):
        return [
            f"plan: must be a JSON object with summary, design_note and stories, got {_show(raw)}"
        ]

    errors: list[str] = []
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        errors = [
            f"{_location(err['loc'])}: {_message(err)}"
            for err in exc.errors(include_url=False)
            if err["type"] != "plan_rules"
        ]
    else:
        return plan
    stories = raw.get("stories")
    if isinstance(stories, list):
        errors.extend(_rule_errors(_raw_entries(stories)))
    if len(errors) > MAX_ERRORS:
        hidden = len(errors) - MAX_ERRORS
        errors = [*errors[:MAX_ERRORS], f"… {hidden} more errors not shown"]
    return errors

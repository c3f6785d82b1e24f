"""The script format: rules that match a conversation, each with numbered turns.

See README.md in this directory for the format as a user writes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from testbed.models.wire import Seen

FaultKind = Literal[
    "rate_limit",
    "overloaded",
    "server_error",
    "insufficient_quota",
    "payment_required",
    "hang",
    "http",
    "stream_error",
    "stream_cut",
    "malformed",
]


class ScriptError(ValueError):
    """The script file itself is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptUsage(_Strict):
    """Token counts to report. `input` is *uncached* prompt tokens; `output`
    includes `reasoning`. Omitted `input`/`output` are estimated (chars / 4)."""

    input: int | None = Field(default=None, ge=0)
    cached: int = Field(default=0, ge=0)
    cache_write: int = Field(default=0, ge=0)
    output: int | None = Field(default=None, ge=0)
    reasoning: int | None = Field(default=None, ge=0)


class ScriptToolCall(_Strict):
    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None
    """Sent verbatim as the arguments string: script malformed JSON with it."""
    id: str | None = None

    @model_validator(mode="after")
    def _one_argument_form(self) -> ScriptToolCall:
        if self.arguments is not None and self.raw_arguments is not None:
            raise ValueError("give either arguments or raw_arguments, not both")
        return self

    def raw(self) -> str:
        if self.raw_arguments is not None:
            return self.raw_arguments
        return json.dumps(self.arguments or {})


class Fault(_Strict):
    """An error reply instead of the turn, for the first `times` requests of it."""

    kind: FaultKind
    times: int | None = Field(default=None, ge=1)
    """How many requests of this turn get the fault; omitted = every request."""
    retry_after: float | None = Field(default=None, ge=0)
    retry_after_ms: int | None = Field(default=None, ge=0)
    seconds: float = Field(default=3600.0, ge=0)
    """`hang` only: how long to sleep before answering normally."""
    after: int = Field(default=2, ge=0)
    """Stream faults only: events sent before the stream breaks."""
    status: int | None = Field(default=None, ge=400, le=599)
    message: str | None = None
    type: str | None = None
    code: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data


class Turn(_Strict):
    text: str = ""
    tool_calls: list[ScriptToolCall] = Field(default_factory=list)
    reasoning: str | None = None
    """DeepSeek `reasoning_content`, an Anthropic `thinking` block or a Responses
    reasoning summary, depending on the protocol."""
    usage: ScriptUsage = Field(default_factory=ScriptUsage)
    latency: float = Field(default=0.0, ge=0)
    faults: list[Fault] = Field(default_factory=list)
    stop: Literal["max_tokens", "refusal"] | None = None
    """Force an unusual stop reason (default: tool use if tool calls, else end of turn)."""
    model: str | None = None
    """Model name to report (default: the requested one)."""
    template: bool = False
    """Substitute $first_user, $last_user, $last_tool_result, $model, $turn."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"text": data}
        if isinstance(data, dict) and "fault" in data:
            data = dict(data)
            fault = data.pop("fault")
            data["faults"] = [fault, *data.get("faults", [])]
        return data


class Match(_Strict):
    """Regular expressions (Python `re.search`, DOTALL); all given ones must match."""

    system: str | None = None
    first_user: str | None = None
    last_user: str | None = None
    any_user: str | None = None
    """Matches if any user message matches (Codex's first user item is a preamble)."""
    model: str | None = None
    protocol: Literal["openai-chat", "openai-responses", "anthropic"] | None = None

    @field_validator("system", "first_user", "last_user", "any_user", "model")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
        return pattern

    def matches(self, seen: Seen) -> bool:
        checks = (
            (self.system, seen.system),
            (self.first_user, seen.first_user),
            (self.last_user, seen.last_user),
            (self.model, seen.model),
        )
        if self.protocol is not None and self.protocol != seen.protocol:
            return False
        if not all(p is None or re.search(p, text, re.DOTALL) for p, text in checks):
            return False
        pattern = self.any_user
        return pattern is None or any(re.search(pattern, u, re.DOTALL) for u in seen.users)


class Rule(_Strict):
    name: str = ""
    match: Match = Field(default_factory=Match)
    turns: list[Turn] = Field(min_length=1)


class Script(_Strict):
    rules: list[Rule] = Field(default_factory=list)
    api_key: str | None = None
    """If set, requests must carry exactly this key (else 401)."""
    models: list[str] = Field(default_factory=lambda: ["testbed-model"])
    """What `GET /v1/models` lists (any model name is still accepted)."""

    def label(self, index: int) -> str:
        """A rule's name, or its position when unnamed."""
        return self.rules[index].name or f"rule {index + 1}"

    def find(self, seen: Seen) -> int | None:
        for index, rule in enumerate(self.rules):
            if rule.match.matches(seen):
                return index
        return None


def parse_script(text: str, *, origin: str = "script") -> Script:
    """YAML or JSON (JSON is YAML) text → `Script`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScriptError(f"{origin}: invalid YAML/JSON: {exc}") from exc
    return script_from_data(data, origin=origin)


def script_from_data(data: object, *, origin: str = "script") -> Script:
    if isinstance(data, list):
        data = {"rules": data}
    try:
        return Script.model_validate(data)
    except ValueError as exc:
        raise ScriptError(f"{origin}: {exc}") from exc


def load_script(path: str | Path) -> Script:
    file = Path(path)
    return parse_script(file.read_text("utf-8"), origin=str(file))

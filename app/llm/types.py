"""The one provider-neutral shape of a conversation and of a model's reply.

Agents build a `Conversation`, call `ModelClient.complete`, append the returned
`AssistantTurn` as-is (it carries whatever the provider needs back verbatim) and
append one `ToolResult` per tool call.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Protocol = Literal["openai-chat", "openai-responses", "anthropic"]

StopReason = Literal["end_turn", "tool_use", "max_tokens", "refusal", "pause_turn", "other"]
"""Normalised stop reason; the provider's own value is kept in `AssistantTurn.raw_stop_reason`."""


class ToolSpec(BaseModel):
    """A tool offered to the model; `parameters` is a JSON Schema object."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]


class ToolCall(BaseModel):
    """One tool call. `arguments is None` means the model sent unusable arguments;
    `error` then says why and should be sent back as the tool result."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str
    error: str | None = None

    @classmethod
    def from_raw(cls, id: str, name: str, raw: str) -> ToolCall:
        """Parse a JSON argument string as the model sent it, never raising."""
        if raw.strip() == "":
            return cls(id=id, name=name, arguments={}, raw_arguments=raw)
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = str(exc) if isinstance(exc, json.JSONDecodeError) else "nesting too deep"
            return cls(
                id=id,
                name=name,
                arguments=None,
                raw_arguments=raw,
                error=(
                    f'invalid JSON in the arguments of tool "{name}": {msg}. '
                    "Call the tool again with the arguments as one JSON object."
                ),
            )
        return cls.from_value(id, name, value, raw)

    @classmethod
    def from_value(cls, id: str, name: str, value: object, raw: str | None = None) -> ToolCall:
        """Accept an already-decoded value; anything but an object is an error."""
        raw_text = raw if raw is not None else json.dumps(value)
        if isinstance(value, dict):
            return cls(id=id, name=name, arguments=value, raw_arguments=raw_text)
        return cls(
            id=id,
            name=name,
            arguments=None,
            raw_arguments=raw_text,
            error=(
                f'the arguments of tool "{name}" must be a JSON object, '
                f"got {_json_type(value)}. Call the tool again with an object."
            ),
        )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


class Usage(BaseModel):
    """Tokens of one call, normalised across providers.

    `uncached_input + cache_read + cache_write` is the whole prompt; `output`
    includes `reasoning` (reasoning is informational and never priced twice).
    """

    model_config = ConfigDict(frozen=True)

    uncached_input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        return self.uncached_input + self.cache_read + self.cache_write

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            uncached_input=self.uncached_input + other.uncached_input,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
            output=self.output + other.output,
            reasoning=self.reasoning + other.reasoning,
        )


class ProviderState(BaseModel):
    """Opaque data a provider requires back verbatim on later requests.

    Only re-sent to the same wire protocol: DeepSeek's `reasoning_content`
    (openai-chat), Anthropic content blocks incl. signed `thinking` blocks, and
    Responses output items incl. `reasoning` items.
    """

    model_config = ConfigDict(frozen=True)

    protocol: Protocol
    reasoning_content: str | None = None
    items: list[dict[str, Any]] = Field(default_factory=list)


class UserMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["user"] = "user"
    text: str


class ToolResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["tool"] = "tool"
    call_id: str
    content: str
    is_error: bool = False


class AssistantTurn(BaseModel):
    """A model's reply; append it unchanged to the conversation."""

    model_config = ConfigDict(frozen=True)

    role: Literal["assistant"] = "assistant"
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    stop_reason: StopReason = "end_turn"
    raw_stop_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    """The model name the API returned (may differ from the configured id)."""
    requested_at: datetime | None = None
    """UTC time the request was sent (prices can depend on it)."""
    latency_s: float = 0.0
    attempts: int = 1
    reasoning: str | None = None
    """Human-readable reasoning/thinking text, for logs only."""
    provider: ProviderState | None = None


Message = Annotated[UserMessage | AssistantTurn | ToolResult, Field(discriminator="role")]


class Conversation(BaseModel):
    """System text plus the message history, in order."""

    system: str = ""
    messages: list[Message] = Field(default_factory=list)

    def user(self, text: str) -> Conversation:
        self.messages.append(UserMessage(text=text))
        return self

    def assistant(self, turn: AssistantTurn) -> Conversation:
        self.messages.append(turn)
        return self

    def tool_result(self, call_id: str, content: str, *, is_error: bool = False) -> Conversation:
        self.messages.append(ToolResult(call_id=call_id, content=content, is_error=is_error))
        return self

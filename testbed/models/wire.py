"""What the three wire formats have in common: the request as the script sees it,
the reply to render, and errors to send in the provider's own shape."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Stop = Literal["end_turn", "tool_use", "max_tokens", "refusal"]
ErrorKind = Literal[
    "invalid_request",
    "authentication",
    "not_found",
    "rate_limit",
    "overloaded",
    "server_error",
    "insufficient_quota",
    "payment_required",
]


@dataclass
class Seen:
    """A request reduced to what rules match on and what turns can template from."""

    protocol: str
    model: str
    system: str
    first_user: str
    last_user: str
    last_tool_result: str
    assistants: list[Any]
    """One entry per assistant turn already in the request (raw message or item group)."""
    users: list[str] = field(default_factory=list)
    """Every user message's text, in order (rules can match any of them)."""

    @classmethod
    def of(
        cls,
        protocol: str,
        model: str,
        system: str,
        *,
        users: list[str],
        tool_results: list[str],
        assistants: list[Any],
    ) -> Seen:
        """The reduction every wire format ends with, from what it collected in order."""
        return cls(
            protocol=protocol,
            model=model,
            system=system,
            first_user=users[0] if users else "",
            last_user=users[-1] if users else "",
            last_tool_result=tool_results[-1] if tool_results else "",
            assistants=assistants,
            users=users,
        )

    @property
    def turn_index(self) -> int:
        return len(self.assistants)


@dataclass
class ToolCallOut:
    id: str
    name: str
    arguments: str


@dataclass
class Output:
    """A scripted turn ready to render: templated, ids assigned, usage settled."""

    model: str
    text: str
    calls: list[ToolCallOut]
    reasoning: str | None
    stop: Stop
    input: int
    cached: int
    cache_write: int
    output: int
    reasoning_tokens: int


@dataclass
class WireError(Exception):
    """An error reply; each protocol renders `kind` into its own error body."""

    status: int
    kind: ErrorKind
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    type: str | None = None
    code: str | None = None

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.kind}: {self.message}"


def new_id(prefix: str, size: int = 12) -> str:
    return prefix + secrets.token_hex(size)


def signature(thinking: str) -> str:
    """The fake but checkable signature the testbed puts on thinking blocks."""
    digest = hashlib.sha256(b"testbed-thinking:" + thinking.encode()).digest()
    return base64.b64encode(digest).decode()


def text_of(content: object) -> str:
    """Text of a string or a list of text-ish parts, as all three formats allow."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
        )
    return ""


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def invalid(message: str) -> WireError:
    return WireError(400, "invalid_request", message)


def expect_list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise invalid(f"{key}: expected an array")
    return value

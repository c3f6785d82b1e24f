"""Anthropic Messages wire format, with the checks the real API applies that a
client most easily gets wrong (tool_result placement, thinking pass-back,
at most 4 cache breakpoints)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from testbed.models.sse import Event, pieces
from testbed.models.wire import (
    Output,
    Seen,
    WireError,
    bearer,
    expect_list,
    invalid,
    new_id,
    signature,
    text_of,
)

PROTOCOL = "anthropic"
_ROLES = ("user", "assistant", "system")
MAX_CACHE_BREAKPOINTS = 4

_ERRORS: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "not_found": "not_found_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "server_error": "api_error",
    "insufficient_quota": "billing_error",
    "payment_required": "billing_error",
}


def error_body(error: WireError) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}`."""
    return {
        "type": "error",
        "error": {"type": error.type or _ERRORS[error.kind], "message": error.message},
        "request_id": new_id("req_"),
    }


def _blocks(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _count_cache_control(body: Mapping[str, Any]) -> int:
    count = 0
    for tool in body.get("tools") or []:
        count += isinstance(tool, dict) and "cache_control" in tool
    system = body.get("system")
    for block in system if isinstance(system, list) else []:
        count += isinstance(block, dict) and "cache_control" in block
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            count += sum("cache_control" in b for b in _blocks(message.get("content")))
    return count


def credentials(headers: Mapping[str, str]) -> str | None:
    """`x-api-key`, or `Authorization: Bearer` (OAuth tokens, and what current SDKs send
    for `auth_token`)."""
    return headers.get("x-api-key") or bearer(headers)


def read(body: Mapping[str, Any], headers: Mapping[str, str]) -> Seen:
    if not headers.get("anthropic-version"):
        raise invalid("anthropic-version: header is required")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    if not isinstance(body.get("max_tokens"), int):
        raise invalid("max_tokens: Field required")
    messages = expect_list(body, "messages")
    breakpoints = _count_cache_control(body)
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )
    system = [text_of(body.get("system"))]
    users: list[str] = []
    results: list[str] = []
    assistants: list[Any] = []
    pending: list[str] = []
    conversed = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise invalid(f"messages.{index}: role must be 'user', 'assistant' or 'system'")
        blocks = _blocks(message.get("content"))
        if message["role"] == "system":
            # Claude Code's mid-conversation system beta: instructions between turns.
            system.append(text_of(blocks))
            continue
        if not conversed and message["role"] != "user":
            raise invalid("messages: first message must use the 'user' role")
        conversed = True
        if message["role"] == "assistant":
            if pending:
                raise _unanswered(index - 1, pending)
            assistants.append(message)
            pending = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
            continue
        _check_user_blocks(index, blocks, pending)
        pending = []
        text = text_of([b for b in blocks if b.get("type") == "text"])
        if text:
            users.append(text)
        for block in blocks:
            if block.get("type") == "tool_result":
                results.append(text_of(block.get("content")))
    return Seen.of(
        PROTOCOL,
        model,
        "\n".join(s for s in system if s),
        users=users,
        tool_results=results,
        assistants=assistants,
    )


def _check_user_blocks(index: int, blocks: list[dict[str, Any]], pending: list[str]) -> None:
    answered = [str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result"]
    unknown = [a for a in answered if a not in pending]
    if unknown:
        raise invalid(
            f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
            f"{unknown[0]}. Each `tool_result` block must have a corresponding `tool_use` block "
            "in the previous message."
        )
    missing = [p for p in pending if p not in answered]
    if missing:
        raise _unanswered(index - 1, missing)
    seen_other = False
    for block in blocks:
        if block.get("type") == "tool_result" and seen_other:
            raise invalid(
                f"messages.{index}.content: tool_result blocks must come first in the "
                "user message, before any other content"
            )
        seen_other = seen_other or block.get("type") != "tool_result"


def _unanswered(index: int, ids: list[str]) -> WireError:
    return invalid(
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
        f"after: {', '.join(ids)}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message."
    )


def check_passback(seen: Seen, index: int, thinking: str) -> None:
    """Thinking blocks must come back unmodified, signature included."""
    blocks = _blocks(seen.assistants[index].get("content"))
    for block in blocks:
        if block.get("type") == "thinking":
            if block.get("thinking") != thinking or block.get("signature") != signature(thinking):
                raise invalid(
                    f"messages: assistant turn {index + 1}: Invalid `signature` in `thinking` block"
                )
            return
    raise invalid(
        f"messages: assistant turn {index + 1}: Expected `thinking` or `redacted_thinking`, "
        f"but found `{blocks[0].get('type') if blocks else 'nothing'}`. When `thinking` is "
        "enabled, a final `assistant` message must start with a thinking block."
    )


def _tool_input(arguments: str) -> object:
    """The real API always sends an object; a scripted malformed string is kept as-is."""
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def render(out: Output, seen: Seen, body: Mapping[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if out.reasoning is not None:
        content.append(
            {"type": "thinking", "thinking": out.reasoning, "signature": signature(out.reasoning)}
        )
    if out.text:
        content.append({"type": "text", "text": out.text})
    for call in out.calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
        )
    stop = {"end_turn": "end_turn", "tool_use": "tool_use", "max_tokens": "max_tokens"}.get(
        out.stop, "refusal"
    )
    return {
        "id": new_id("msg_", 12),
        "type": "message",
        "role": "assistant",
        "model": out.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": out.input,
            "cache_creation_input_tokens": out.cache_write,
            "cache_read_input_tokens": out.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": out.cache_write,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": out.output,
            "service_tier": "standard",
        },
    }


def call_id() -> str:
    return new_id("toolu_")


def stream(message: Mapping[str, Any]) -> list[Event]:
    """A rendered message as Messages streaming events, `message_start` … `message_stop`."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [
        Event({"type": "message_start", "message": start}, "message_start"),
        Event({"type": "ping"}, "ping"),
    ]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block)
    events.append(
        Event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {
                    "input_tokens": usage["input_tokens"],
                    "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                    "cache_read_input_tokens": usage["cache_read_input_tokens"],
                    "output_tokens": usage["output_tokens"],
                },
            },
            "message_delta",
        )
    )
    events.append(Event({"type": "message_stop"}, "message_stop"))
    return events


def _block_events(index: int, block: Mapping[str, Any]) -> list[Event]:
    kind = block["type"]
    deltas: list[dict[str, Any]]
    if kind == "thinking":
        opening: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        raw = block["input"] if isinstance(block["input"], str) else json.dumps(block["input"])
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces(raw)]
    else:
        opening = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
    return [
        Event(
            {"type": "content_block_start", "index": index, "content_block": opening},
            "content_block_start",
        ),
        *(
            Event(
                {"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta"
            )
            for d in deltas
        ),
        Event({"type": "content_block_stop", "index": index}, "content_block_stop"),
    ]


def stream_error(error: WireError) -> Event:
    """A mid-stream error, as the API sends an overload after `message_start`."""
    return Event(error_body(error), "error")


def count_tokens(body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """`/v1/messages/count_tokens`: the same ~4 characters per token estimate as replies."""
    if not headers.get("anthropic-version"):
        raise invalid("anthropic-version: header is required")
    if not isinstance(body.get("model"), str) or not body.get("model"):
        raise invalid("model: Field required")
    expect_list(body, "messages")
    counted = {k: body.get(k) for k in ("system", "messages", "tools") if k in body}
    return {"input_tokens": max(1, len(json.dumps(counted)) // 4)}

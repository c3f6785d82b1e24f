"""Anthropic Messages (`POST {base}/v1/messages`).

Content blocks of an earlier reply (signed `thinking` blocks included) are sent
back unmodified. Prompt caching marks the last tool, the system block and the
last block of the conversation, so each agent step re-reads the previous prefix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.llm.client import Wire
from app.llm.config import ModelConfig
from app.llm.errors import FatalError
from app.llm.types import (
    AssistantTurn,
    Conversation,
    ProviderState,
    StopReason,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
    UserMessage,
)
from app.llm.wire_fields import as_dict, as_int, replayed_items

PROTOCOL = "anthropic"
API_VERSION = "2023-06-01"
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
_STOP: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
}


def build_request(
    config: ModelConfig,
    conversation: Conversation,
    tools: Sequence[ToolSpec],
    max_tokens: int,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": config.model_id,
        "max_tokens": max_tokens,
        "messages": _messages(conversation),
    }
    if conversation.system:
        body["system"] = [
            {"type": "text", "text": conversation.system, "cache_control": dict(EPHEMERAL)}
        ]
    if tools:
        specs: list[dict[str, Any]] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools
        ]
        specs[-1]["cache_control"] = dict(EPHEMERAL)
        body["tools"] = specs
    body.update(config.extra_body)
    return body


def _messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Merge consecutive user-side items into one user message, tool results first."""
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []

    def flush() -> None:
        if results or texts:
            out.append({"role": "user", "content": results + texts})
            results.clear()
            texts.clear()

    for message in conversation.messages:
        if isinstance(message, ToolResult):
            results.append(_tool_result(message))
        elif isinstance(message, UserMessage):
            if message.text:
                texts.append({"type": "text", "text": message.text})
        else:
            flush()
            out.append({"role": "assistant", "content": _assistant_content(message)})
    flush()
    if out and out[-1]["role"] == "user" and out[-1]["content"]:
        last = out[-1]["content"][-1]
        out[-1]["content"][-1] = {**last, "cache_control": dict(EPHEMERAL)}
    return out


def _tool_result(result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result.call_id}
    if result.content:
        block["content"] = result.content
    if result.is_error:
        block["is_error"] = True
    return block


def _assistant_content(turn: AssistantTurn) -> list[dict[str, Any]]:
    replayed = replayed_items(turn, PROTOCOL)
    if replayed is not None:
        return replayed
    blocks: list[dict[str, Any]] = []
    if turn.text:
        blocks.append({"type": "text", "text": turn.text})
    for call in turn.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments or {}}
        )
    if not blocks:
        blocks.append({"type": "text", "text": "(no reply)"})
    return blocks


def parse_usage(raw: object) -> Usage:
    """`input_tokens` already excludes cache reads and writes."""
    usage = as_dict(raw)
    return Usage(
        uncached_input=as_int(usage.get("input_tokens")),
        cache_read=as_int(usage.get("cache_read_input_tokens")),
        cache_write=as_int(usage.get("cache_creation_input_tokens")),
        output=as_int(usage.get("output_tokens")),
    )


def parse_response(
    body: dict[str, Any], *, requested_at: datetime | None = None, latency_s: float = 0.0
) -> AssistantTurn:
    content = body.get("content")
    if not isinstance(content, list):
        raise FatalError("reply has no content blocks", model=str(body.get("model") or ""))
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            call_id = str(block.get("id") or f"toolu_{len(calls)}")
            name = str(block.get("name") or "")
            value = block.get("input")
            raw = value if isinstance(value, str) else json.dumps(value)
            if isinstance(value, str):
                calls.append(ToolCall.from_raw(call_id, name, raw))
            else:
                calls.append(ToolCall.from_value(call_id, name, value, raw))
    raw_stop = body.get("stop_reason")
    raw_stop = raw_stop if isinstance(raw_stop, str) else None
    stop: StopReason = _STOP.get(raw_stop or "", "other")
    if calls and stop == "end_turn":
        stop = "tool_use"
    return AssistantTurn(
        text="".join(texts),
        tool_calls=calls,
        stop_reason=stop,
        raw_stop_reason=raw_stop,
        usage=parse_usage(body.get("usage")),
        model=str(body.get("model") or ""),
        requested_at=requested_at,
        latency_s=latency_s,
        reasoning="\n\n".join(thinking) or None,
        provider=ProviderState(
            protocol=PROTOCOL, items=[b for b in content if isinstance(b, dict)]
        ),
    )


WIRE = Wire(
    path="/v1/messages",
    headers=lambda key: {"x-api-key": key, "anthropic-version": API_VERSION},
    build_request=build_request,
    parse_response=parse_response,
)

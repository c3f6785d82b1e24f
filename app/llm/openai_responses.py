"""OpenAI Responses (`POST {base}/responses`), for OpenAI's reasoning models, which
refuse function tools on Chat Completions.

Stateless (`store: false`): the previous output items, reasoning items with their
encrypted content included, are passed back as input on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.llm.client import Wire
from app.llm.config import ModelConfig
from app.llm.errors import FatalError, RetryableError
from app.llm.openai_chat import tool_result_text
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
from app.llm.wire_fields import as_dict, as_int, bearer_headers, replayed_items

PROTOCOL = "openai-responses"
_INCOMPLETE: dict[str, StopReason] = {
    "max_output_tokens": "max_tokens",
    "content_filter": "refusal",
}
_RETRYABLE_FAILURES = frozenset({"server_error", "rate_limit_exceeded", "vector_store_timeout"})


def build_request(
    config: ModelConfig,
    conversation: Conversation,
    tools: Sequence[ToolSpec],
    max_tokens: int,
) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for message in conversation.messages:
        if isinstance(message, UserMessage):
            items.append({"role": "user", "content": message.text})
        elif isinstance(message, ToolResult):
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.call_id,
                    "output": tool_result_text(message),
                }
            )
        else:
            items.extend(_assistant_items(message))
    body: dict[str, Any] = {
        "model": config.model_id,
        "input": items,
        "max_output_tokens": max_tokens,
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    if conversation.system:
        body["instructions"] = conversation.system
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "strict": False,
            }
            for tool in tools
        ]
    body.update(config.extra_body)
    return body


def _assistant_items(turn: AssistantTurn) -> list[dict[str, Any]]:
    replayed = replayed_items(turn, PROTOCOL)
    if replayed is not None:
        return replayed
    items: list[dict[str, Any]] = []
    if turn.text:
        items.append({"role": "assistant", "content": turn.text})
    for call in turn.tool_calls:
        items.append(
            {
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.raw_arguments,
            }
        )
    return items


def parse_usage(raw: object) -> Usage:
    """`input_tokens` includes cached tokens; `output_tokens` includes reasoning."""
    usage = as_dict(raw)
    prompt = as_int(usage.get("input_tokens"))
    cached = as_int(as_dict(usage.get("input_tokens_details")).get("cached_tokens"))
    return Usage(
        uncached_input=max(0, prompt - cached),
        cache_read=cached,
        output=as_int(usage.get("output_tokens")),
        reasoning=as_int(as_dict(usage.get("output_tokens_details")).get("reasoning_tokens")),
    )


def parse_response(
    body: dict[str, Any], *, requested_at: datetime | None = None, latency_s: float = 0.0
) -> AssistantTurn:
    model = str(body.get("model") or "")
    status = body.get("status")
    if status == "failed":
        error = as_dict(body.get("error"))
        code = str(error.get("code") or "")
        message = str(error.get("message") or "response failed")
        cls = RetryableError if code in _RETRYABLE_FAILURES else FatalError
        raise cls(message, model=model, code=code or None)
    output = body.get("output")
    if not isinstance(output, list):
        raise FatalError("reply has no output items", model=model)
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text", "")))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    texts.append(str(part.get("refusal", "")))
        elif kind == "reasoning":
            for part in item.get("summary") or []:
                if isinstance(part, dict):
                    reasoning.append(str(part.get("text", "")))
        elif kind == "function_call":
            arguments = item.get("arguments")
            calls.append(
                ToolCall.from_raw(
                    str(item.get("call_id") or item.get("id") or f"call_{len(calls)}"),
                    str(item.get("name") or ""),
                    arguments if isinstance(arguments, str) else "",
                )
            )
    stop: StopReason
    raw_stop = str(status) if isinstance(status, str) else None
    if status == "incomplete":
        reason = as_dict(body.get("incomplete_details")).get("reason")
        raw_stop = f"incomplete:{reason}"
        stop = _INCOMPLETE.get(str(reason), "other")
    elif calls:
        stop = "tool_use"
    elif status in ("completed", None):
        stop = "end_turn"
    else:
        stop = "other"
    return AssistantTurn(
        text="".join(texts),
        tool_calls=calls,
        stop_reason=stop,
        raw_stop_reason=raw_stop,
        usage=parse_usage(body.get("usage")),
        model=model,
        requested_at=requested_at,
        latency_s=latency_s,
        reasoning="\n\n".join(r for r in reasoning if r) or None,
        provider=ProviderState(protocol=PROTOCOL, items=[i for i in output if isinstance(i, dict)]),
    )


WIRE = Wire(
    path="/responses",
    headers=bearer_headers,
    build_request=build_request,
    parse_response=parse_response,
)

"""OpenAI-compatible Chat Completions (OpenAI, DeepSeek, OpenRouter, vLLM, Ollama…).

DeepSeek's thinking mode returns `reasoning_content`, which must be sent back on
that assistant message in later requests of a tool loop, or the API answers 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.llm.client import Wire
from app.llm.config import ModelConfig
from app.llm.errors import FatalError, RetryableError
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
from app.llm.wire_fields import as_dict, as_int, bearer_headers

PROTOCOL = "openai-chat"
_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def tool_result_text(result: ToolResult) -> str:
    """Chat-style protocols have no `is_error` flag, so say it in the content."""
    if result.is_error and not result.content.lower().startswith("error"):
        return f"ERROR: {result.content}"
    return result.content


def build_request(
    config: ModelConfig,
    conversation: Conversation,
    tools: Sequence[ToolSpec],
    max_tokens: int,
) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if conversation.system:
        messages.append({"role": "system", "content": conversation.system})
    for message in conversation.messages:
        if isinstance(message, UserMessage):
            messages.append({"role": "user", "content": message.text})
        elif isinstance(message, ToolResult):
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": message.call_id,
                    "content": tool_result_text(message),
                }
            )
        else:
            messages.append(_assistant_message(message))
    body: dict[str, Any] = {
        "model": config.model_id,
        "messages": messages,
        config.max_tokens_field: max_tokens,
    }
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in tools
        ]
    body.update(config.extra_body)
    return body


def _assistant_message(turn: AssistantTurn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.raw_arguments},
            }
            for call in turn.tool_calls
        ]
    state = turn.provider
    if state is not None and state.protocol == PROTOCOL and state.reasoning_content is not None:
        message["reasoning_content"] = state.reasoning_content
    if message["content"] is None and "tool_calls" not in message:
        message["content"] = ""
    return message


def parse_usage(raw: object) -> Usage:
    """`prompt_tokens` includes cached tokens; DeepSeek also reports hit/miss split."""
    usage = as_dict(raw)
    prompt = as_int(usage.get("prompt_tokens"))
    details = as_dict(usage.get("prompt_tokens_details"))
    if "prompt_cache_hit_tokens" in usage or "prompt_cache_miss_tokens" in usage:
        cached = as_int(usage.get("prompt_cache_hit_tokens"))
        uncached = (
            as_int(usage.get("prompt_cache_miss_tokens"))
            if "prompt_cache_miss_tokens" in usage
            else max(0, prompt - cached)
        )
    else:
        cached = as_int(details.get("cached_tokens"))
        uncached = max(0, prompt - cached)
    completion = as_dict(usage.get("completion_tokens_details"))
    return Usage(
        uncached_input=uncached,
        cache_read=cached,
        output=as_int(usage.get("completion_tokens")),
        reasoning=as_int(completion.get("reasoning_tokens")),
    )


def parse_response(
    body: dict[str, Any], *, requested_at: datetime | None = None, latency_s: float = 0.0
) -> AssistantTurn:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise FatalError("reply has no choices", model=str(body.get("model", "")))
    choice = choices[0]
    message = as_dict(choice.get("message"))
    content = message.get("content")
    text = content if isinstance(content, str) else _text_parts(content)
    calls: list[ToolCall] = []
    for index, raw_call in enumerate(message.get("tool_calls") or []):
        call = as_dict(raw_call)
        function = as_dict(call.get("function"))
        arguments = function.get("arguments")
        raw = arguments if isinstance(arguments, str) else ""
        call_id = str(call.get("id") or f"call_{index}")
        name = str(function.get("name") or "")
        if arguments is not None and not isinstance(arguments, str):
            calls.append(ToolCall.from_value(call_id, name, arguments))
        else:
            calls.append(ToolCall.from_raw(call_id, name, raw))
    finish = choice.get("finish_reason")
    raw_stop = finish if isinstance(finish, str) else None
    if raw_stop == "insufficient_system_resource":
        # DeepSeek: generation was cut off by server load; the reply is unusable.
        raise RetryableError(
            "generation interrupted (insufficient_system_resource)",
            model=str(body.get("model") or ""),
        )
    stop: StopReason = "tool_use" if calls else _STOP.get(raw_stop or "", "other")
    reasoning = message.get("reasoning_content")
    reasoning_text = reasoning if isinstance(reasoning, str) else None
    return AssistantTurn(
        text=text,
        tool_calls=calls,
        stop_reason=stop,
        raw_stop_reason=raw_stop,
        usage=parse_usage(body.get("usage")),
        model=str(body.get("model") or ""),
        requested_at=requested_at,
        latency_s=latency_s,
        reasoning=reasoning_text,
        provider=ProviderState(protocol=PROTOCOL, reasoning_content=reasoning_text),
    )


def _text_parts(content: object) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, dict) and part.get("type") in ("text", "output_text")
    )


WIRE = Wire(
    path="/chat/completions",
    headers=bearer_headers,
    build_request=build_request,
    parse_response=parse_response,
)

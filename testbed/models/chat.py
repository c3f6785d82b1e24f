"""OpenAI Chat Completions wire format (with DeepSeek's additions)."""

from __future__ import annotations

import time
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
    text_of,
)

PROTOCOL = "openai-chat"

_ERRORS: dict[str, tuple[str, str | None]] = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "not_found": ("invalid_request_error", "model_not_found"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "overloaded": ("server_error", "overloaded"),
    "server_error": ("server_error", None),
    "insufficient_quota": ("insufficient_quota", "insufficient_quota"),
    "payment_required": ("invalid_request_error", "insufficient_balance"),
}


def error_body(error: WireError) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` as OpenAI and DeepSeek send it."""
    kind_type, kind_code = _ERRORS[error.kind]
    return {
        "error": {
            "message": error.message,
            "type": error.type or kind_type,
            "param": None,
            "code": error.code or kind_code,
        }
    }


def credentials(headers: Mapping[str, str]) -> str | None:
    return bearer(headers)


def read(body: Mapping[str, Any], headers: Mapping[str, str]) -> Seen:
    messages = expect_list(body, "messages")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter")
    system: list[str] = []
    users: list[str] = []
    tool_results: list[str] = []
    assistants: list[Any] = []
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{index}]: expected an object")
        role = message.get("role")
        if role != "tool" and pending:
            raise _missing_tool_results(pending)
        if role in ("system", "developer"):
            system.append(text_of(message.get("content")))
        elif role == "user":
            users.append(text_of(message.get("content")))
        elif role == "assistant":
            assistants.append(message)
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    pending.add(call["id"])
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                raise invalid(
                    f"messages[{index}]: messages with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (unknown tool_call_id {call_id!r})"
                )
            pending.discard(call_id)
            tool_results.append(text_of(message.get("content")))
        else:
            raise invalid(f"messages[{index}].role: invalid value {role!r}")
    if pending:
        raise _missing_tool_results(pending)
    return Seen.of(
        PROTOCOL,
        model,
        "\n".join(system),
        users=users,
        tool_results=tool_results,
        assistants=assistants,
    )


def _missing_tool_results(pending: set[str]) -> WireError:
    return invalid(
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(sorted(pending))
    )


def check_passback(seen: Seen, index: int, reasoning: str) -> None:
    """DeepSeek thinking mode: a tool loop must resend each `reasoning_content`."""
    message = seen.assistants[index]
    if message.get("reasoning_content") != reasoning:
        raise invalid(
            "The reasoning_content in the thinking mode must be passed back to the API "
            f"(assistant message {index + 1} lacks it or it was changed)."
        )


def _is_deepseek(model: str) -> bool:
    return "deepseek" in model.lower()


def render(out: Output, seen: Seen, body: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": out.text if out.text or not out.calls else None,
        "refusal": None,
        "annotations": [],
    }
    if out.reasoning is not None:
        message["reasoning_content"] = out.reasoning
    if out.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in out.calls
        ]
    finish = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}.get(
        out.stop, "content_filter"
    )
    prompt = out.input + out.cached + out.cache_write
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": out.output,
        "total_tokens": prompt + out.output,
        "prompt_tokens_details": {"cached_tokens": out.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": out.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if _is_deepseek(out.model):
        usage["prompt_cache_hit_tokens"] = out.cached
        usage["prompt_cache_miss_tokens"] = out.input + out.cache_write
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": out.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
        "system_fingerprint": "fp_testbed",
    }


def call_id() -> str:
    return new_id("call_")


def stream(reply: Mapping[str, Any], body: Mapping[str, Any]) -> list[Event]:
    """A rendered completion as `chat.completion.chunk` events, then `[DONE]`.

    Usage comes as OpenAI sends it (a last chunk with no choices, only when
    `stream_options.include_usage`), or as DeepSeek does (always, on the last choice chunk).
    """
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    deepseek = _is_deepseek(str(reply["model"]))
    head = {k: reply[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> Event:
        data: dict[str, Any] = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage and not deepseek:
            data["usage"] = None
        return Event(data)

    choice = reply["choices"][0]
    message = choice["message"]
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [
        chunk({"reasoning_content": p}) for p in pieces(message.get("reasoning_content") or "")
    ]
    events += [chunk({"content": p}) for p in pieces(message.get("content") or "")]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        opening = {"index": index, "id": call["id"], "type": "function"}
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {**opening, "function": {"name": function["name"], "arguments": ""}}
                    ]
                }
            )
        )
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
            for p in pieces(function["arguments"])
        ]
    last = chunk({}, choice["finish_reason"])
    if deepseek:
        assert isinstance(last.data, dict)
        last.data["usage"] = reply["usage"]
    events.append(last)
    if include_usage and not deepseek:
        events.append(Event({**head, "choices": [], "usage": reply["usage"]}))
    events.append(Event("[DONE]"))
    return events


def stream_error(error: WireError) -> Event:
    """OpenAI-compatible servers send a mid-stream failure as an error object chunk."""
    return Event(error_body(error))

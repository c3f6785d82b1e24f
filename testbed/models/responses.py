"""OpenAI Responses wire format (stateless use: `store: false`, items passed back)."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

from testbed.models.chat import error_body as error_body
from testbed.models.sse import Event, pieces
from testbed.models.wire import Output, Seen, WireError, bearer, invalid, new_id, text_of

PROTOCOL = "openai-responses"
_ASSISTANT_ITEMS = frozenset({"reasoning", "function_call", "custom_tool_call", "local_shell_call"})
_CALL_ITEMS = frozenset({"function_call", "custom_tool_call", "local_shell_call"})
_OUTPUT_ITEMS = frozenset(
    {"function_call_output", "custom_tool_call_output", "local_shell_call_output"}
)


def _kind(item: Mapping[str, Any]) -> str:
    """`user` / `system` / `assistant` / `tool` for an input item."""
    kind = item.get("type")
    role = item.get("role")
    if kind in _ASSISTANT_ITEMS or role == "assistant":
        return "assistant"
    if kind in _OUTPUT_ITEMS:
        return "tool"
    if role in ("system", "developer"):
        return "system"
    if role == "user":
        return "user"
    raise invalid(f"input: unsupported item (type={kind!r}, role={role!r})")


def credentials(headers: Mapping[str, str]) -> str | None:
    return bearer(headers)


def read(body: Mapping[str, Any], headers: Mapping[str, str]) -> Seen:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model'.")
    raw_input = body.get("input")
    items: list[Any] = (
        [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input or []
    )
    if not isinstance(items, list):
        raise invalid("input: expected a string or an array of items")
    instructions = body.get("instructions")
    system = [instructions] if isinstance(instructions, str) else []
    users: list[str] = []
    results: list[str] = []
    groups: list[list[dict[str, Any]]] = []
    calls: set[str] = set()
    answered: set[str] = set()
    in_assistant = False
    for item in items:
        if not isinstance(item, dict):
            raise invalid("input: every item must be an object")
        kind = _kind(item)
        if kind == "assistant":
            if not in_assistant:
                groups.append([])
            groups[-1].append(item)
            in_assistant = True
            if item.get("type") in _CALL_ITEMS:
                calls.add(str(item.get("call_id")))
            continue
        in_assistant = False
        if kind == "system":
            system.append(text_of(item.get("content")))
        elif kind == "user":
            users.append(text_of(item.get("content")))
        else:
            call_id = str(item.get("call_id"))
            if call_id not in calls:
                raise invalid(
                    f"No tool call found for function call output with call_id {call_id}."
                )
            answered.add(call_id)
            output = item.get("output")
            results.append(output if isinstance(output, str) else text_of(output))
    missing = calls - answered
    if missing:
        raise invalid(f"No tool output found for function call {sorted(missing)[0]}.")
    return Seen.of(
        PROTOCOL,
        model,
        "\n".join(system),
        users=users,
        tool_results=results,
        assistants=groups,
    )


def _custom_tools(body: Mapping[str, Any]) -> set[str]:
    """Names of freeform (`type: custom`) tools: their calls carry a raw `input` string."""
    tools = body.get("tools")
    listed = tools if isinstance(tools, list) else []
    return {str(t.get("name")) for t in listed if isinstance(t, dict) and t.get("type") == "custom"}


def render(out: Output, seen: Seen, body: Mapping[str, Any]) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    if out.reasoning is not None:
        reasoning: dict[str, Any] = {
            "id": new_id("rs_"),
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": out.reasoning}],
        }
        if "reasoning.encrypted_content" in (body.get("include") or []):
            reasoning["encrypted_content"] = base64.b64encode(out.reasoning.encode()).decode()
        items.append(reasoning)
    if out.text:
        items.append(
            {
                "id": new_id("msg_"),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": out.text, "annotations": [], "logprobs": []}
                ],
            }
        )
    custom = _custom_tools(body)
    for call in out.calls:
        if call.name in custom:
            items.append(
                {
                    "id": new_id("ctc_"),
                    "type": "custom_tool_call",
                    "status": "completed",
                    "call_id": call.id,
                    "name": call.name,
                    "input": call.arguments,
                }
            )
            continue
        items.append(
            {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
            }
        )
    incomplete = {"max_tokens": "max_output_tokens", "refusal": "content_filter"}.get(out.stop)
    prompt = out.input + out.cached + out.cache_write
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": out.model,
        "output": items,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": out.cached},
            "output_tokens": out.output,
            "output_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
            "total_tokens": prompt + out.output,
        },
        "user": None,
        "metadata": {},
    }


def call_id() -> str:
    return new_id("call_")


def check_passback(seen: Seen, index: int, reasoning: str) -> None:
    """The real API does not reject omitted reasoning items (it just reasons worse);
    tests inspect the recorded requests instead."""


def stream(reply: Mapping[str, Any]) -> list[Event]:
    """A rendered response as Responses streaming events, `response.created` …
    `response.completed` (or `response.incomplete`), each with its `sequence_number`."""
    events: list[tuple[str, dict[str, Any]]] = []
    pending = {**reply, "status": "in_progress", "output": [], "usage": None}
    events.append(("response.created", {"response": pending}))
    events.append(("response.in_progress", {"response": pending}))
    for index, item in enumerate(reply["output"]):
        events += _item_events(index, item)
    final = "response.incomplete" if reply["status"] == "incomplete" else "response.completed"
    events.append((final, {"response": reply}))
    return [
        Event({"type": kind, "sequence_number": n, **data}, kind)
        for n, (kind, data) in enumerate(events)
    ]


def _item_events(index: int, item: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    at = {"item_id": item["id"], "output_index": index}
    kind = item["type"]
    middle: list[tuple[str, dict[str, Any]]] = []
    if kind == "reasoning":
        opening: dict[str, Any] = {"id": item["id"], "type": "reasoning", "summary": []}
        for s_index, part in enumerate(item["summary"]):
            where = {**at, "summary_index": s_index}
            middle.append(
                (
                    "response.reasoning_summary_part.added",
                    {**where, "part": {"type": "summary_text", "text": ""}},
                )
            )
            middle += [
                ("response.reasoning_summary_text.delta", {**where, "delta": p})
                for p in pieces(part["text"])
            ]
            middle.append(("response.reasoning_summary_text.done", {**where, "text": part["text"]}))
            middle.append(("response.reasoning_summary_part.done", {**where, "part": part}))
    elif kind == "message":
        opening = {**item, "status": "in_progress", "content": []}
        for c_index, part in enumerate(item["content"]):
            where = {**at, "content_index": c_index}
            middle.append(("response.content_part.added", {**where, "part": {**part, "text": ""}}))
            middle += [
                ("response.output_text.delta", {**where, "delta": p, "logprobs": []})
                for p in pieces(part["text"])
            ]
            middle.append(
                ("response.output_text.done", {**where, "text": part["text"], "logprobs": []})
            )
            middle.append(("response.content_part.done", {**where, "part": part}))
    elif kind == "custom_tool_call":
        opening = {**item, "status": "in_progress", "input": ""}
        middle += [
            ("response.custom_tool_call_input.delta", {**at, "delta": p})
            for p in pieces(item["input"])
        ]
        middle.append(("response.custom_tool_call_input.done", {**at, "input": item["input"]}))
    else:
        opening = {**item, "status": "in_progress", "arguments": ""}
        middle += [
            ("response.function_call_arguments.delta", {**at, "delta": p})
            for p in pieces(item["arguments"])
        ]
        middle.append(
            (
                "response.function_call_arguments.done",
                {**at, "name": item["name"], "arguments": item["arguments"]},
            )
        )
    return [
        ("response.output_item.added", {"output_index": index, "item": opening}),
        *middle,
        ("response.output_item.done", {"output_index": index, "item": item}),
    ]


def stream_error(error: WireError) -> Event:
    """A mid-stream failure: a `response.failed` event carrying the error."""
    return Event(
        {
            "type": "response.failed",
            "sequence_number": 0,
            "response": {
                "id": new_id("resp_"),
                "object": "response",
                "status": "failed",
                "error": {"code": error.code or "server_error", "message": error.message},
                "output": [],
                "usage": None,
            },
        },
        "response.failed",
    )

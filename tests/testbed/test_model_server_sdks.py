"""The scripted model server spoken to by the official `openai` and `anthropic` SDKs,
streamed and not: whatever they accept from the testbed, they accept from a provider."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Serve

KEY = "sk-test-sdk"

TOOL_TURN: dict[str, Any] = {
    "reasoning": "The file is missing; write it.",
    "text": "Writing it now.",
    "tool_calls": [
        {"name": "write_file", "arguments": {"path": "a.txt", "content": "hi"}, "id": "call_w1"}
    ],
    "usage": {"input": 40, "cached": 900, "cache_write": 60, "output": 25, "reasoning": 9},
}
SCRIPT: dict[str, Any] = {
    "models": ["testbed-model", "other-model"],
    "rules": [
        {"name": "tool", "match": {"first_user": "^write"}, "turns": [TOOL_TURN, "All done."]},
        {"name": "latest", "match": {"last_user": "^second question"}, "turns": ["latest"] * 3},
        {"name": "anywhere", "match": {"any_user": "the real task"}, "turns": ["found"]},
    ],
}
CHAT_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "write_file",
            "description": "write",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]


def oai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEY, base_url=url + "/v1", max_retries=0)


def claude(url: str, **auth: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, max_retries=0, **(auth or {"api_key": KEY}))


# --- Chat Completions -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-test", "deepseek-v4-flash"])
async def test_chat_streamed_equals_non_streamed(serve: Serve, model: str) -> None:
    server = serve(SCRIPT)
    messages: list[Any] = [{"role": "user", "content": "write a.txt"}]
    async with oai(server.url) as client:
        plain = await client.chat.completions.create(
            model=model, messages=messages, tools=CHAT_TOOLS
        )
        async with client.chat.completions.stream(
            model=model,
            messages=messages,
            tools=CHAT_TOOLS,
            stream_options={"include_usage": True},
        ) as stream:
            streamed = await stream.get_final_completion()
    for completion in (plain, streamed):
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Writing it now."
        [call] = choice.message.tool_calls or []
        assert isinstance(call, openai.types.chat.ChatCompletionMessageFunctionToolCall)
        assert call.id == "call_w1" and call.function.name == "write_file"
        assert json.loads(call.function.arguments) == {"path": "a.txt", "content": "hi"}
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == 1000 and completion.usage.completion_tokens == 25
        details = completion.usage.prompt_tokens_details
        assert details is not None and details.cached_tokens == 900
    assert [r.stream for r in server.requests] == [False, True]
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.requests)


async def test_chat_stream_chunks_and_usage_only_when_asked(serve: Serve) -> None:
    server = serve(SCRIPT)
    messages: list[Any] = [{"role": "user", "content": "write"}]
    async with oai(server.url) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=messages, stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]
        assert raw.headers["x-request-id"].startswith("req_")
        assert all(c.usage is None for c in chunks)
        deepseek = await client.chat.completions.create(
            model="deepseek-v4-flash", messages=messages, stream=True
        )
        ds_chunks = [chunk async for chunk in deepseek]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Writing it now."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in ds_chunks
    )
    assert reasoning == TOOL_TURN["reasoning"]
    assert ds_chunks[-1].usage is not None and ds_chunks[-1].usage.total_tokens == 1025


# --- Responses --------------------------------------------------------------------------


async def test_responses_streamed_equals_non_streamed(serve: Serve) -> None:
    server = serve(SCRIPT)
    tools: list[Any] = [
        {"type": "function", "name": "write_file", "parameters": {"type": "object"}},
    ]
    args: dict[str, Any] = {
        "model": "gpt-test",
        "input": "write a.txt",
        "tools": tools,
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }
    async with oai(server.url) as client:
        plain = await client.responses.create(**args)
        async with client.responses.stream(**args) as stream:
            kinds = [event.type async for event in stream]
            streamed = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.function_call_arguments.delta" in kinds
    for response in (plain, streamed):
        reasoning, message, call = response.output
        assert reasoning.type == "reasoning" and reasoning.encrypted_content
        assert message.type == "message" and response.output_text == "Writing it now."
        assert call.type == "function_call" and call.call_id == "call_w1"
        assert json.loads(call.arguments) == {"path": "a.txt", "content": "hi"}
        assert response.usage is not None
        assert response.usage.input_tokens == 1000
        assert response.usage.input_tokens_details.cached_tokens == 900
        assert response.usage.output_tokens_details.reasoning_tokens == 9
    async with oai(server.url) as client:
        second = await client.responses.create(
            model="gpt-test",
            input=[
                {"role": "user", "content": "write a.txt"},
                *[item.model_dump(exclude_none=True) for item in streamed.output],
                {"type": "function_call_output", "call_id": "call_w1", "output": "ok"},
            ],
            store=False,
        )
    assert second.output_text == "All done."
    assert [r.turn for r in server.requests] == [0, 0, 1]


async def test_responses_custom_tool_gets_a_custom_tool_call(serve: Serve) -> None:
    server = serve(
        [{"turns": [{"tool_calls": [{"name": "apply_patch", "raw_arguments": "*** Begin"}]}]}]
    )
    tools: list[Any] = [{"type": "custom", "name": "apply_patch", "description": "patch"}]
    async with (
        oai(server.url) as client,
        client.responses.stream(model="gpt-test", input="patch it", tools=tools) as stream,
    ):
        kinds = [event.type async for event in stream]
        response = await stream.get_final_response()
    [call] = response.output
    assert call.type == "custom_tool_call" and call.input == "*** Begin"
    assert "response.custom_tool_call_input.delta" in kinds


# --- Anthropic Messages -----------------------------------------------------------------


ANTHROPIC_TOOLS: list[Any] = [
    {"name": "write_file", "description": "write", "input_schema": {"type": "object"}}
]


async def test_anthropic_streamed_equals_non_streamed(serve: Serve) -> None:
    server = serve(SCRIPT)
    messages: list[Any] = [{"role": "user", "content": "write a.txt"}]
    async with claude(server.url) as client:
        plain = await client.messages.create(
            model="claude-test", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
        )
        async with client.messages.stream(
            model="claude-test", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
        ) as stream:
            kinds = [event.type async for event in stream]
            streamed = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "message_delta" in kinds
    for message in (plain, streamed):
        thinking, text, call = message.content
        assert thinking.type == "thinking" and thinking.thinking == TOOL_TURN["reasoning"]
        assert text.type == "text" and text.text == "Writing it now."
        assert call.type == "tool_use" and call.input == {"path": "a.txt", "content": "hi"}
        assert message.stop_reason == "tool_use"
        usage = message.usage
        assert (usage.input_tokens, usage.output_tokens) == (40, 25)
        assert usage.cache_read_input_tokens == 900 and usage.cache_creation_input_tokens == 60
    assert plain._request_id and plain._request_id.startswith("req_")
    # The thinking block round-trips: its signature checks out on the next turn.
    follow_up: list[Any] = [
        *messages,
        {"role": "assistant", "content": [b.model_dump() for b in streamed.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id}]},
    ]
    async with claude(server.url) as client:
        done = await client.messages.create(model="claude-test", max_tokens=100, messages=follow_up)
    assert done.content[0].type == "text" and done.content[0].text == "All done."


@pytest.mark.parametrize("auth", ["api_key", "auth_token"])
async def test_anthropic_sdk_auth_headers_are_accepted(serve: Serve, auth: str) -> None:
    server = serve({**SCRIPT, "api_key": KEY})
    async with claude(server.url, **{auth: KEY}) as client:
        reply = await client.messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "write"}]
        )
    assert reply.stop_reason == "tool_use"
    assert server.requests[-1].headers.get("authorization") == f"Bearer {KEY}"
    raw = httpx.post(
        server.url + "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "write"}]},
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    )
    assert raw.status_code == 200 and raw.headers["request-id"].startswith("req_")


async def test_anthropic_system_messages_mid_conversation(serve: Serve) -> None:
    server = serve([{"match": {"system": "be terse"}, "turns": ["one", "two"]}])
    messages: list[Any] = [
        {"role": "user", "content": "hello"},
        {"role": "system", "content": "be terse"},
        {"role": "assistant", "content": "one"},
        {"role": "system", "content": [{"type": "text", "text": "still terse"}]},
        {"role": "user", "content": "again"},
    ]
    async with (
        claude(server.url) as client,
        client.messages.stream(model="claude-test", max_tokens=10, messages=messages) as stream,
    ):
        text = await stream.get_final_text()
    assert text == "two" and server.requests[-1].turn == 1


async def test_count_tokens_and_models(serve: Serve) -> None:
    server = serve(SCRIPT)
    async with claude(server.url) as client:
        counted = await client.messages.count_tokens(
            model="claude-test", messages=[{"role": "user", "content": "how long is this?"}]
        )
        assert counted.input_tokens > 0
        listed = [m.id async for m in client.models.list()]
        assert listed == ["testbed-model", "other-model"]
        assert (await client.models.retrieve("other-model")).type == "model"
        with pytest.raises(anthropic.NotFoundError):
            await client.models.retrieve("nope")
    async with oai(server.url) as oclient:
        assert [m.id async for m in oclient.models.list()] == ["testbed-model", "other-model"]
    assert {r.path for r in server.requests} >= {"/v1/messages/count_tokens", "/v1/models"}


async def test_unknown_paths_answer_in_the_provider_shape(serve: Serve) -> None:
    server = serve(SCRIPT)
    async with oai(server.url) as client:
        with pytest.raises(openai.NotFoundError) as oerr:
            await client.embeddings.create(model="m", input="x")
    assert oerr.value.status_code == 404 and "Invalid URL" in str(oerr.value)
    assert oerr.value.response.headers["x-request-id"].startswith("req_")
    async with claude(server.url) as aclient:
        with pytest.raises(anthropic.NotFoundError) as aerr:
            await aclient.beta.files.list()
    body = aerr.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "not_found_error"
    head = httpx.head(server.url + "/")
    assert head.status_code == 404
    assert server.requests[-1].protocol == "unknown" and server.requests[-1].path == "/"


async def test_rules_match_last_user_or_any_user(serve: Serve) -> None:
    server = serve(SCRIPT)
    async with oai(server.url) as client:
        latest = await client.chat.completions.create(
            model="m",
            messages=[
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "latest"},
                {"role": "user", "content": "second question"},
            ],
        )
        anywhere = await client.responses.create(
            model="m",
            input=[
                {"role": "user", "content": "<environment_context>cwd</environment_context>"},
                {"role": "user", "content": "Here is the real task: go"},
            ],
        )
    assert latest.choices[0].message.content == "latest"
    assert anywhere.output_text == "found"
    assert [r.rule for r in server.requests] == ["latest", "anywhere"]


# --- Stream faults ----------------------------------------------------------------------


async def test_stream_error_event_reaches_the_sdks(serve: Serve) -> None:
    fault = {"kind": "stream_error", "after": 2}
    server = serve([{"turns": [{"text": "never whole", "fault": fault}]}])
    async with claude(server.url) as client:
        with pytest.raises(anthropic.APIStatusError) as err:
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            ) as stream:
                await stream.get_final_message()
    assert "overloaded_error" in str(err.value.body)
    async with oai(server.url) as oclient:
        with pytest.raises(openai.APIError):
            stream_r = await oclient.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
            _ = [chunk async for chunk in stream_r]
    plain = httpx.post(
        server.url + "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    )
    assert plain.status_code == 529


@pytest.mark.parametrize("kind", ["malformed", "stream_cut"])
async def test_broken_streams(serve: Serve, kind: str) -> None:
    server = serve([{"turns": [{"text": "never whole", "fault": {"kind": kind, "after": 3}}]}])
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.post(
            "/v1/messages",
            json={
                "model": "m",
                "max_tokens": 5,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        plain = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {KEY}"},
        )
    frames = [f for f in reply.text.split("\n\n") if f]
    assert reply.status_code == 200 and "message_stop" not in reply.text
    if kind == "malformed":
        assert len(frames) == 4
        with pytest.raises(json.JSONDecodeError):
            json.loads(frames[-1].split("data: ", 1)[1])
    else:
        assert len(frames) == 3
    assert plain.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        plain.json()

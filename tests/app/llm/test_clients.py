"""Each wire-protocol client against the scripted model server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.llm.errors import FatalError, RetryableError
from app.llm.retry import RetryPolicy
from app.llm.types import AssistantTurn, Conversation, Protocol, ToolSpec
from tests.app.llm.conftest import API_KEY, PROTOCOLS, MakeClient
from tests.conftest import Serve

BASH = ToolSpec(
    name="bash",
    description="Run a shell command.",
    parameters={
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
)
FINISH = ToolSpec(
    name="finish",
    description="Report the work as done.",
    parameters={"type": "object", "properties": {"summary": {"type": "string"}}},
)


def rule(*turns: Any, first_user: str = "fix the bug") -> dict[str, Any]:
    return {"rules": [{"name": "story", "match": {"first_user": first_user}, "turns": list(turns)}]}


def conversation() -> Conversation:
    return Conversation(system="You are a story agent.").user("Please fix the bug in app.py")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_two_round_tool_loop(
    make_client: MakeClient, serve: Serve, protocol: Protocol
) -> None:
    script = rule(
        {
            "tool_calls": [{"name": "bash", "arguments": {"command": "pytest -q"}}],
            "usage": {"input": 900, "cached": 100, "output": 40},
        },
        {"text": "All tests pass: $last_tool_result", "template": True},
    )
    server = serve(script)
    client = make_client(server, protocol)
    convo = conversation()
    first = await client.complete(convo, [BASH, FINISH])
    assert first.stop_reason == "tool_use"
    assert first.model == "test-model"
    assert first.requested_at is not None and first.requested_at.tzinfo is not None
    assert first.usage.uncached_input == 900 and first.usage.cache_read == 100
    assert first.usage.output == 40
    [call] = first.tool_calls
    assert (call.name, call.arguments, call.error) == ("bash", {"command": "pytest -q"}, None)

    convo.assistant(first).tool_result(call.id, "3 passed")
    second = await client.complete(convo, [BASH, FINISH])
    assert second.text == "All tests pass: 3 passed"
    assert second.stop_reason == "end_turn"
    assert second.tool_calls == []

    requests = server.requests
    assert [r.status for r in requests] == [200, 200]
    assert [r.turn for r in requests] == [0, 1]
    headers = requests[0].headers
    if protocol == "anthropic":
        assert headers["x-api-key"] == API_KEY
        assert headers["anthropic-version"] == "2023-06-01"
    else:
        assert headers["authorization"] == f"Bearer {API_KEY}"


async def test_rate_limit_is_retried_after_retry_after(
    make_client: MakeClient, serve: Serve
) -> None:
    """All three protocols at once (one rule each), so the test waits ~1 s, not 3."""
    fault = {"kind": "rate_limit", "retry_after": 1, "times": 1}
    server = serve(
        {
            "rules": [
                {"match": {"protocol": p}, "turns": [{"text": p, "fault": fault}]}
                for p in PROTOCOLS
            ]
        }
    )

    async def timed(protocol: Protocol) -> tuple[AssistantTurn, float]:
        started = time.monotonic()
        turn = await make_client(server, protocol).complete(conversation(), [])
        return turn, time.monotonic() - started

    results = await asyncio.gather(*(timed(p) for p in PROTOCOLS))
    for protocol, (turn, elapsed) in zip(PROTOCOLS, results, strict=True):
        assert (turn.text, turn.attempts) == (protocol, 2)
        assert 1.0 <= elapsed < 3.0, protocol
        first, second = server.requests_for(protocol)
        assert (first.status, second.status) == (429, 200)
        assert second.at - first.at >= 0.95


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_overloaded_529_is_retried(
    make_client: MakeClient, serve: Serve, protocol: Protocol
) -> None:
    script = rule({"text": "ok", "fault": {"kind": "overloaded", "status": 529, "times": 2}})
    server = serve(script)
    turn = await make_client(server, protocol).complete(conversation(), [])
    assert turn.text == "ok"
    assert turn.attempts == 3
    assert [r.status for r in server.requests] == [529, 529, 200]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_retries_are_bounded(
    make_client: MakeClient, serve: Serve, protocol: Protocol
) -> None:
    script = rule({"text": "never", "fault": "server_error"})
    server = serve(script)
    client = make_client(server, protocol, policy=RetryPolicy(3, 0.01, 0.05))
    with pytest.raises(RetryableError) as caught:
        await client.complete(conversation(), [])
    assert caught.value.status == 500
    assert len(server.requests) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_insufficient_quota_is_fatal_and_not_retried(
    make_client: MakeClient, serve: Serve, protocol: Protocol
) -> None:
    message = "You exceeded your current quota, please check your plan and billing details."
    script = rule({"text": "never", "fault": {"kind": "insufficient_quota", "message": message}})
    server = serve(script)
    with pytest.raises(FatalError) as caught:
        await make_client(server, protocol).complete(conversation(), [])
    assert caught.value.status == 429
    assert caught.value.message == message
    assert message in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_payment_required_is_fatal(
    make_client: MakeClient, serve: Serve, protocol: Protocol
) -> None:
    script = rule(
        {"text": "never", "fault": {"kind": "payment_required", "message": "Insufficient Balance"}}
    )
    server = serve(script)
    with pytest.raises(FatalError) as caught:
        await make_client(server, protocol).complete(conversation(), [])
    assert (caught.value.status, caught.value.message) == (402, "Insufficient Balance")
    assert len(server.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_hang_times_out_and_is_retried(
    make_client: MakeClient, serve: Serve, protocol: Protocol
) -> None:
    script = rule({"text": "late but fine", "fault": {"kind": "hang", "seconds": 5, "times": 1}})
    server = serve(script)
    client = make_client(server, protocol, timeout_s=0.3)
    turn = await client.complete(conversation(), [])
    assert (turn.text, turn.attempts) == ("late but fine", 2)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_tool_arguments_do_not_stop_the_loop(
    make_client: MakeClient, serve: Serve, protocol: Protocol
) -> None:
    script = rule(
        {"tool_calls": [{"name": "bash", "raw_arguments": '{"command": "ls"'}]},
        {"tool_calls": [{"name": "bash", "raw_arguments": '["ls"]'}]},
        {"text": "recovered"},
    )
    server = serve(script)
    client = make_client(server, protocol)
    convo = conversation()
    for _ in range(2):
        turn = await client.complete(convo, [BASH])
        [call] = turn.tool_calls
        assert call.arguments is None
        assert call.error is not None and '"bash"' in call.error
        convo.assistant(turn).tool_result(call.id, call.error, is_error=True)
    final = await client.complete(convo, [BASH])
    assert final.text == "recovered"
    assert all(r.status == 200 for r in server.requests)


async def test_deepseek_reasoning_content_is_sent_back(
    make_client: MakeClient, serve: Serve
) -> None:
    script = rule(
        {
            "reasoning": "The failing test imports a missing module.",
            "tool_calls": [{"name": "bash", "arguments": {"command": "ls"}}],
            "usage": {"input": 500, "cached": 1500, "output": 200, "reasoning": 150},
        },
        {"text": "done"},
    )
    server = serve(script)
    client = make_client(server, "openai-chat", "deepseek-v4-flash")
    convo = conversation()
    first = await client.complete(convo, [BASH])
    assert first.reasoning == "The failing test imports a missing module."
    assert first.usage.uncached_input == 500 and first.usage.cache_read == 1500
    assert first.usage.reasoning == 150
    convo.assistant(first).tool_result(first.tool_calls[0].id, "app.py")
    assert (await client.complete(convo, [BASH])).text == "done"

    second = server.requests[1].body
    assistant = second["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["reasoning_content"] == "The failing test imports a missing module."
    assert assistant["tool_calls"][0]["id"] == first.tool_calls[0].id
    assert second["messages"][3] == {
        "role": "tool",
        "tool_call_id": first.tool_calls[0].id,
        "content": "app.py",
    }


async def test_deepseek_without_v1_in_base_url(make_client: MakeClient, serve: Serve) -> None:
    server = serve(rule("hi"))
    client = make_client(server, "openai-chat", base=server.url + "/")
    assert client.config.base_url == server.url
    assert (await client.complete(conversation(), [])).text == "hi"
    assert server.requests[0].path == "/chat/completions"


async def test_anthropic_thinking_passed_back_and_cache_control(
    make_client: MakeClient, serve: Serve
) -> None:
    script = rule(
        {
            "reasoning": "I should run the tests first.",
            "text": "Running the tests.",
            "tool_calls": [{"name": "bash", "arguments": {"command": "pytest"}}],
            "usage": {"input": 30, "cached": 0, "cache_write": 2000, "output": 90},
        },
        {"text": "done", "usage": {"input": 40, "cached": 2000, "cache_write": 120, "output": 5}},
    )
    server = serve(script)
    client = make_client(server, "anthropic", "claude-sonnet-5-5")
    convo = conversation()
    first = await client.complete(convo, [BASH, FINISH])
    assert first.reasoning == "I should run the tests first."
    assert first.usage.cache_write == 2000 and first.usage.uncached_input == 30
    convo.assistant(first).tool_result(first.tool_calls[0].id, "ok").user("Also update docs.")
    second = await client.complete(convo, [BASH, FINISH])
    assert second.usage.cache_read == 2000 and second.usage.cache_write == 120

    body = server.requests[1].body
    assert body["system"] == [
        {"type": "text", "text": "You are a story agent.", "cache_control": {"type": "ephemeral"}}
    ]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assistant = body["messages"][1]
    assert assistant["content"] == first.provider.items if first.provider else False
    assert assistant["content"][0]["type"] == "thinking"
    user = body["messages"][2]["content"]
    assert [b["type"] for b in user] == ["tool_result", "text"]
    assert user[0]["tool_use_id"] == first.tool_calls[0].id
    assert user[-1]["cache_control"] == {"type": "ephemeral"}


async def test_responses_reasoning_items_passed_back(make_client: MakeClient, serve: Serve) -> None:
    script = rule(
        {
            "reasoning": "Need the file list.",
            "tool_calls": [{"name": "bash", "arguments": {"command": "ls"}}],
            "usage": {"input": 100, "cached": 400, "output": 60, "reasoning": 40},
        },
        {"text": "done"},
    )
    server = serve(script)
    client = make_client(server, "openai-responses", "gpt-5.5")
    convo = conversation()
    first = await client.complete(convo, [BASH])
    assert first.usage.reasoning == 40 and first.usage.cache_read == 400
    convo.assistant(first).tool_result(first.tool_calls[0].id, "app.py")
    assert (await client.complete(convo, [BASH])).text == "done"

    body = server.requests[1].body
    assert body["store"] is False and body["instructions"] == "You are a story agent."
    kinds = [item.get("type", item.get("role")) for item in body["input"]]
    assert kinds == ["user", "reasoning", "function_call", "function_call_output"]
    reasoning = body["input"][1]
    assert reasoning["encrypted_content"]
    assert body["input"][3] == {
        "type": "function_call_output",
        "call_id": first.tool_calls[0].id,
        "output": "app.py",
    }
    assert body["tools"][0]["name"] == "bash" and "function" not in body["tools"][0]


async def test_bad_request_is_fatal_with_server_message(
    make_client: MakeClient, serve: Serve
) -> None:
    server = serve(rule("hi", first_user="something else"))
    with pytest.raises(FatalError) as caught:
        await make_client(server, "openai-chat").complete(conversation(), [])
    assert caught.value.status == 400
    assert "Please fix the bug in app.py" in caught.value.message
    assert len(server.requests) == 1

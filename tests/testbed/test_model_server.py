"""The scripted model server, spoken to directly over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testbed.models.harness import running_model_server
from testbed.models.script import ScriptError, load_script, parse_script
from tests.conftest import Serve, free_port

AUTH = {"Authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}

SCRIPT: dict[str, Any] = {
    "rules": [
        {
            "name": "planner",
            "match": {"system": "planner", "model": "^claude"},
            "turns": ["plan for $first_user", "second"],
        },
        {
            "name": "story",
            "match": {"first_user": r"^Story S\d+"},
            "turns": [
                {"text": "zero"},
                {"text": "one"},
                {"text": "two: $last_user", "template": True},
            ],
        },
    ]
}


def chat_body(
    *assistant_turns: str, first: str = "Story S1: do it", model: str = "m"
) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "agent"},
        {"role": "user", "content": first},
    ]
    for index, text in enumerate(assistant_turns):
        messages += [
            {"role": "assistant", "content": text},
            {"role": "user", "content": f"next {index}"},
        ]
    return {"model": model, "messages": messages}


async def post(server_url: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server_url) as http:
        return await http.post(path, json=body, headers=headers)


async def test_turn_k_is_the_number_of_assistant_messages(serve: Serve) -> None:
    server = serve(SCRIPT)
    texts = []
    for k in range(3):
        reply = await post(server.url, "/v1/chat/completions", chat_body(*["x"] * k), AUTH)
        assert reply.status_code == 200, reply.text
        texts.append(reply.json()["choices"][0]["message"]["content"])
    assert texts == ["zero", "one", "two: next 1"]
    assert [r.turn for r in server.requests] == [0, 1, 2]
    assert {r.rule for r in server.requests} == {"story"}

    past = await post(server.url, "/chat/completions", chat_body("a", "b", "c"), AUTH)
    assert past.status_code == 400
    error = past.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "'story' has 3 turn(s)" in error["message"] and "3 assistant turn(s)" in error["message"]


async def test_unmatched_conversation_names_the_first_user_message(serve: Serve) -> None:
    server = serve(SCRIPT)
    reply = await post(
        server.url, "/v1/chat/completions", chat_body(first="Refactor the parser"), AUTH
    )
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert "no script rule matches" in message and "'Refactor the parser'" in message

    long = "word " * 200
    body = {
        "model": "claude-x",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": long}],
    }
    reply = await post(server.url, "/v1/messages", body, ANTHROPIC_HEADERS)
    assert reply.status_code == 400
    payload = reply.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert "word word" in payload["error"]["message"] and "…" in payload["error"]["message"]
    assert len(payload["error"]["message"]) < 300


async def test_rules_match_on_system_and_model(serve: Serve) -> None:
    server = serve(SCRIPT)
    body = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "You are the planner."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "issue #42"}]}],
    }
    reply = await post(server.url, "/v1/messages", body, ANTHROPIC_HEADERS)
    assert reply.status_code == 200, reply.text
    message = reply.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    assert message["content"] == [{"type": "text", "text": "plan for $first_user"}]
    assert message["stop_reason"] == "end_turn"
    assert set(message["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    }
    other_model = {**body, "model": "deepseek-flash"}
    assert (
        await post(server.url, "/v1/messages", other_model, ANTHROPIC_HEADERS)
    ).status_code == 400


async def test_chat_reply_shape(serve: Serve) -> None:
    server = serve(
        [
            {
                "turns": [
                    {
                        "tool_calls": [
                            {"name": "bash", "arguments": {"command": "ls"}, "id": "call_1"}
                        ],
                        "reasoning": "think",
                        "usage": {"input": 10, "cached": 90, "output": 7, "reasoning": 3},
                    }
                ]
            }
        ]
    )
    reply = (
        await post(server.url, "/v1/chat/completions", chat_body(model="deepseek-v4-pro"), AUTH)
    ).json()
    assert reply["id"].startswith("chatcmpl-") and reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int) and reply["model"] == "deepseek-v4-pro"
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "bash", "arguments": '{"command": "ls"}'},
        }
    ]
    assert choice["message"]["reasoning_content"] == "think"
    usage = reply["usage"]
    assert usage["prompt_tokens"] == 100 and usage["prompt_tokens_details"]["cached_tokens"] == 90
    assert usage["prompt_cache_hit_tokens"] == 90 and usage["prompt_cache_miss_tokens"] == 10
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 3


async def test_responses_reply_shape(serve: Serve) -> None:
    server = serve(
        [{"turns": [{"text": "hello", "usage": {"input": 5, "cached": 5, "output": 2}}]}]
    )
    body = {"model": "gpt-5.5", "input": "Story S1", "instructions": "be brief"}
    reply = (await post(server.url, "/v1/responses", body, AUTH)).json()
    assert reply["object"] == "response" and reply["status"] == "completed"
    assert reply["id"].startswith("resp_")
    [item] = reply["output"]
    assert item["type"] == "message" and item["content"][0] == {
        "type": "output_text",
        "text": "hello",
        "annotations": [],
        "logprobs": [],
    }
    assert reply["usage"]["input_tokens"] == 10
    assert reply["usage"]["input_tokens_details"]["cached_tokens"] == 5


async def test_auth_is_required(serve: Serve) -> None:
    server = serve(SCRIPT)
    reply = await post(server.url, "/v1/chat/completions", chat_body(), {})
    assert reply.status_code == 401 and "API key" in reply.json()["error"]["message"]
    reply = await post(server.url, "/v1/messages", {}, {"anthropic-version": "2023-06-01"})
    assert reply.status_code == 401
    assert reply.json()["error"]["type"] == "authentication_error"
    server.set_script({**SCRIPT, "api_key": "sk-right"})
    wrong = await post(server.url, "/v1/chat/completions", chat_body(), AUTH)
    assert wrong.status_code == 401
    right = await post(
        server.url, "/v1/chat/completions", chat_body(), {"Authorization": "Bearer sk-right"}
    )
    assert right.status_code == 200


async def test_faults_count_per_turn(serve: Serve) -> None:
    server = serve(
        [
            {
                "turns": [
                    {
                        "text": "ok",
                        "faults": [
                            {"kind": "rate_limit", "retry_after": 2, "times": 1},
                            {"kind": "insufficient_quota", "times": 1},
                            {"kind": "payment_required", "times": 1},
                            {"kind": "http", "status": 503, "times": 1},
                        ],
                    }
                ]
            }
        ]
    )
    replies = [await post(server.url, "/v1/chat/completions", chat_body(), AUTH) for _ in range(5)]
    assert [r.status_code for r in replies] == [429, 429, 402, 503, 200]
    assert replies[0].headers["retry-after"] == "2"
    assert replies[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert replies[1].json()["error"]["type"] == "insufficient_quota"
    server.reset()
    again = await post(server.url, "/v1/chat/completions", chat_body(), AUTH)
    assert again.status_code == 429


async def test_anthropic_overloaded_and_checks(serve: Serve) -> None:
    server = serve([{"turns": [{"text": "ok", "fault": {"kind": "overloaded", "times": 1}}]}])
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    first = await post(server.url, "/v1/messages", body, ANTHROPIC_HEADERS)
    assert first.status_code == 529 and first.json()["error"]["type"] == "overloaded_error"
    assert (await post(server.url, "/v1/messages", body, ANTHROPIC_HEADERS)).status_code == 200
    no_max = {k: v for k, v in body.items() if k != "max_tokens"}
    assert (await post(server.url, "/v1/messages", no_max, ANTHROPIC_HEADERS)).status_code == 400
    bad_order = {
        **body,
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "note"},
                    {"type": "tool_result", "tool_use_id": "t1", "content": "r"},
                ],
            },
        ],
    }
    reply = await post(server.url, "/v1/messages", bad_order, ANTHROPIC_HEADERS)
    assert reply.status_code == 400 and "must come first" in reply.json()["error"]["message"]


async def test_deepseek_rejects_missing_reasoning_content(serve: Serve) -> None:
    server = serve(
        [
            {
                "turns": [
                    {"reasoning": "r", "tool_calls": [{"name": "t", "id": "c1"}]},
                    "done",
                ]
            }
        ]
    )
    body = chat_body()
    body["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
    ]
    reply = await post(server.url, "/v1/chat/completions", body, AUTH)
    assert reply.status_code == 400 and "reasoning_content" in reply.json()["error"]["message"]
    body["messages"][2]["reasoning_content"] = "r"
    reply = await post(server.url, "/v1/chat/completions", body, AUTH)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "done"


async def test_missing_tool_results_are_rejected(serve: Serve) -> None:
    server = serve(SCRIPT)
    body = chat_body()
    body["messages"].append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c9", "type": "function", "function": {"name": "t", "arguments": "{}"}}
            ],
        }
    )
    reply = await post(server.url, "/v1/chat/completions", body, AUTH)
    assert reply.status_code == 400 and "c9" in reply.json()["error"]["message"]


def test_json_and_yaml_scripts_are_equivalent(tmp_path: Path) -> None:
    json_path = tmp_path / "script.json"
    yaml_path = tmp_path / "script.yml"
    json_path.write_text(json.dumps(SCRIPT))
    yaml_path.write_text(yaml.safe_dump(SCRIPT))
    assert load_script(json_path) == load_script(yaml_path)


async def test_script_file_served(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(
        """
rules:
  - match: {first_user: "Story"}
    turns:
      - tool_calls:
          - {name: bash, raw_arguments: '{"command": '}
      - "fine"
"""
    )
    with running_model_server(path) as server:
        reply = await post(server.url, "/v1/chat/completions", chat_body(), AUTH)
        call = reply.json()["choices"][0]["message"]["tool_calls"][0]
        assert call["function"]["arguments"] == '{"command": '
        async with httpx.AsyncClient(base_url=server.url) as http:
            log = (await http.get("/_testbed/requests")).json()
            assert log[0]["protocol"] == "openai-chat" and log[0]["status"] == 200
            assert (await http.post("/_testbed/reset")).json() == {"ok": True}
            assert (await http.get("/_testbed/requests")).json() == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rules: [{turns: []}]", "turns"),
        ("rules: [{turns: [x], match: {system: '('}}]", "bad regular expression"),
        ("rules: [{turns: [{fault: {kind: explode}}]}]", "kind"),
        (
            "rules: [{turns: [{tool_calls: [{name: a, arguments: {}, raw_arguments: '{}'}]}]}]",
            "not both",
        ),
        ("rules: [{turns: [{txt: hi}]}]", "txt"),
        ("rules: [", "invalid YAML"),
    ],
)
def test_invalid_scripts_are_reported(text: str, fragment: str) -> None:
    with pytest.raises(ScriptError, match=fragment):
        parse_script(text)


def test_command_line_server(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"rules": [{"turns": ["from the cli"]}]}))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testbed.models",
            "--script",
            str(path),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json=chat_body(),
                    headers=AUTH,
                )
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert reply.json()["choices"][0]["message"]["content"] == "from the cli"
    finally:
        proc.terminate()
        proc.wait(10)

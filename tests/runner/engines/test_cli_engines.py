"""The pinned Claude Code and Codex CLIs complete a scripted task against the testbed model
server: the script makes each CLI's agent call its own file-writing tool, then stop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.engines import (
    CLAUDE_CODE,
    CODEX,
    claude_invocation,
    codex_invocation,
    engine_binary,
    installed_size,
)
from testbed.models.engines import writes_file
from testbed.models.harness import running_model_server
from tests.runner.engines.conftest import RunCli, Sandbox


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_pinned_engines_are_installed() -> None:
    for engine in (CLAUDE_CODE, CODEX):
        assert engine_binary(engine).is_file()
        size = installed_size(engine)
        assert size is not None and size > 50_000_000


@pytest.mark.parametrize("tool", ["Write", "Bash"])
def test_claude_code_writes_a_file(place: Sandbox, run_cli: RunCli, tool: str) -> None:
    target = place.work / "hello.txt"
    rule = writes_file("claude-code", str(target), "hello from claude\n", tool=tool)
    with running_model_server([rule]) as srv:
        invocation = claude_invocation(
            "Create hello.txt saying hello.", base_url=srv.url, home=place.home
        )
        run = run_cli(invocation)
        requests = srv.requests
    assert run.returncode == 0, run.stderr + run.stdout
    assert target.read_text() == "hello from claude\n"
    result = events(run.stdout)[-1]
    assert result["type"] == "result" and result["subtype"] == "success"
    assert result["num_turns"] == 2 and result["result"] == "Done."

    assert [(r.protocol, r.path, r.status) for r in requests] == [
        ("unknown", "/", 404),  # HEAD / first: a reachability probe, 404 tolerated
        ("anthropic", "/v1/messages", 200),
        ("anthropic", "/v1/messages", 200),
    ]
    calls = requests[1:]
    assert [c.turn for c in calls] == [0, 1] and all(c.stream for c in calls)
    first = calls[0]
    assert first.headers["x-api-key"] == invocation.env["ANTHROPIC_API_KEY"]
    assert first.headers["x-app"] == "cli" and "claude-code-" in first.headers["anthropic-beta"]
    tools = {t["name"] for t in first.body["tools"]}
    assert {"Write", "Bash", "Edit", "Read"} <= tools
    roles = [m["role"] for m in first.body["messages"]]
    assert roles[0] == "user" and "system" in roles  # mid-conversation system message
    last = calls[1].body["messages"]
    result_block = next(
        b for m in last if m["role"] == "user" for b in m["content"] if b["type"] == "tool_result"
    )
    assert not result_block.get("is_error"), result_block


@pytest.mark.parametrize(("tool", "model"), [("apply_patch", "gpt-5.5"), ("exec_command", "x")])
def test_codex_writes_a_file(place: Sandbox, run_cli: RunCli, tool: str, model: str) -> None:
    target = place.work / "hello.txt"
    rule = writes_file("codex", "hello.txt", "hello from codex\n", tool=tool)
    with running_model_server([rule]) as srv:
        invocation = codex_invocation(
            "Create hello.txt saying hello.", base_url=srv.url, home=place.home, model=model
        )
        run = run_cli(invocation)
        requests = srv.requests
    assert run.returncode == 0, run.stderr + run.stdout
    assert target.read_text() == "hello from codex\n"
    kinds = [e["type"] for e in events(run.stdout)]
    assert kinds[0] == "thread.started" and kinds[-1] == "turn.completed"

    assert [(r.protocol, r.path, r.status, r.turn) for r in requests] == [
        ("openai-responses", "/v1/responses", 200, 0),
        ("openai-responses", "/v1/responses", 200, 1),
    ]
    first = requests[0]
    assert first.stream and first.body["store"] is False
    assert first.headers["authorization"] == "Bearer " + invocation.env["BARO_MODEL_KEY"]
    assert first.headers["originator"] == "codex_exec"
    tools = {t.get("name"): t.get("type") for t in first.body["tools"]}
    if tool == "apply_patch":
        assert tools["apply_patch"] == "custom"
    assert tools["exec_command"] == "function"
    inputs = first.body["input"]
    users = [i for i in inputs if i.get("role") == "user"]
    assert "<environment_context>" in json.dumps(users[0])  # the preamble comes first
    output_kind = "custom_tool_call_output" if tool == "apply_patch" else "function_call_output"
    [output] = [i for i in requests[1].body["input"] if i.get("type") == output_kind]
    assert "exited with code 0" in output["output"] or "Success" in output["output"]

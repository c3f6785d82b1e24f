"""Issue #11 end to end: label → plan by Claude Code (on a subscription token) → stories by
Codex and by Claude Code, each in bubblewrap behind the model gateway → a green PR whose
cost table shows each engine's tokens and dollars; then no real key or token anywhere the
sandbox could see or the bot wrote (env, argv, HOME files, CLI config, logs, transcripts,
Redis, comments)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from testbed.models.engines import add_file_patch
from testbed.models.harness import RunningModelServer
from tests.conftest import RedisServer
from tests.e2e.harness import Bot, World, bot_env, new_bot, wait_run

CC_TOKEN = "sk-ant-oat01-e2e-subscription-token-7d41c0"
CC_KEY = "sk-ant-api03-e2e-story-key-55e2b9"
OPENAI_KEY = "sk-proj-e2e-codex-key-0c3f7a"
SECRETS = (CC_TOKEN, CC_KEY, OPENAI_KEY)

PLAN = {
    "summary": "Greetings in two files.",
    "design_note": "Plain text files at the repository root.",
    "stories": [
        {
            "id": "S1",
            "title": "Hello file",
            "description": "Create hello.txt saying hello.",
            "writes": ["hello.txt", "snoop-codex.txt"],
            "acceptance": ["hello.txt says hello"],
            "tests": ["grep -qx hello hello.txt"],
            "tier": "light",
        },
        {
            "id": "S2",
            "title": "World file",
            "description": "Create world.txt saying world.",
            "writes": ["world.txt", "snoop-claude.txt"],
            "acceptance": ["world.txt says world"],
            "tests": ["grep -qx world world.txt"],
            "tier": "standard",
        },
    ],
}
USAGE = {"input": 3000, "cached": 9000, "cache_write": 1000, "output": 150}


def snoop(target: str) -> str:
    """Everything the CLI's sandbox holds, copied into the commit: every process's
    environment and argv, every file under HOME (CLI config, sessions, logs), /run, /tmp."""
    return (
        "{ env; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; "
        "tr '\\0' '\\n' < $p/environ; done; "
        "find $HOME /run /tmp -type f -size -4M -exec cat {} +; } "
        f"> {target} 2>/dev/null; echo snooped"
    )


def script() -> dict[str, Any]:
    claude_turns = [
        {"tool_calls": [{"name": "Bash", "arguments": {"command": snoop("snoop-claude.txt")}}]},
        {
            "tool_calls": [
                {
                    "name": "Write",
                    "arguments": {"file_path": "/workspace/world.txt", "content": "world\n"},
                }
            ]
        },
        "Created world.txt.",
    ]
    codex_turns = [
        {"tool_calls": [{"name": "exec_command", "arguments": {"cmd": snoop("snoop-codex.txt")}}]},
        {
            "tool_calls": [
                {"name": "apply_patch", "raw_arguments": add_file_patch("hello.txt", "hello\n")}
            ]
        },
        "Created hello.txt.",
    ]
    for turn in (*claude_turns, *codex_turns):
        if isinstance(turn, dict):
            turn["usage"] = USAGE
    return {
        "rules": [
            {
                "name": "S1 on codex",
                "match": {"protocol": "openai-responses", "any_user": "Implement story S1"},
                "turns": [*codex_turns[:2], {"text": "Created hello.txt.", "usage": USAGE}],
            },
            {
                "name": "S2 on claude code",
                "match": {"protocol": "anthropic", "any_user": "Implement story S2"},
                "turns": [*claude_turns[:2], {"text": "Created world.txt.", "usage": USAGE}],
            },
            {
                "name": "plan on claude code",
                "match": {"protocol": "anthropic", "any_user": "baro's planner"},
                "turns": [{"text": "```json\n" + json.dumps(PLAN) + "\n```", "usage": USAGE}],
            },
        ]
    }


MODELS = [
    {
        "name": "cc-planner",
        "protocol": "anthropic",
        "model_id": "claude-sonnet-5-5",
        "api_key_env": "BARO_TEST_CC_TOKEN",
        "engine": "claude-code",
        "auth": "subscription",
    },
    {
        "name": "cc-stories",
        "protocol": "anthropic",
        "model_id": "claude-haiku-5-5",
        "api_key_env": "BARO_TEST_CC_KEY",
        "engine": "claude-code",
    },
    {
        "name": "codex-stories",
        "protocol": "openai-responses",
        "model_id": "gpt-5.5",
        "api_key_env": "BARO_TEST_OPENAI_KEY",
        "engine": "codex",
    },
]
ROUTING = {
    "planner": "cc-planner",
    "light": "codex-stories",
    "standard": "cc-stories",
    "heavy": "cc-stories",
}


@pytest.fixture(scope="module")
def engines_bot(world: World, e2e_redis: RedisServer, models: RunningModelServer) -> Iterator[Bot]:
    env = bot_env(world.testbed, world.app, e2e_redis.url)
    env["BARO_MODELS"] = json.dumps([{**m, "base_url": models.url} for m in MODELS])
    env["BARO_ROUTING"] = json.dumps(ROUTING)
    env["BARO_TEST_CC_TOKEN"] = CC_TOKEN
    env["BARO_TEST_CC_KEY"] = CC_KEY
    env["BARO_TEST_OPENAI_KEY"] = OPENAI_KEY
    env["BARO_ENGINE_TIMEOUT_SECONDS"] = "300"
    running = new_bot(env)
    running.start_all(runners=2)
    yield running
    running.stop()


def redis_dump(url: str) -> bytes:
    client = Redis.from_url(url)
    try:
        out = bytearray()
        for key in client.scan_iter(count=1000):
            out += key + b"\n" + (client.dump(key) or b"") + b"\n"
        return bytes(out)
    finally:
        client.close()


async def test_plan_by_claude_code_stories_by_codex_and_claude_code(
    world: World, engines_bot: Bot, models: RunningModelServer
) -> None:
    repo = world.new_repo({"README.md": "# Greetings\n", ".github/baro.yml": "review: false\n"})
    issue = world.new_issue(repo, "Greet the world with engines")
    models.set_script(script())
    models.reset()
    await world.deliver_label(engines_bot, repo, issue.number)

    state = wait_run(world, engines_bot, repo, issue.number, what="the run to finish", timeout=240)
    assert state["state"] == "done", (
        json.dumps(
            {k: state.get(k) for k in ("state", "failure", "stories", "plan_stats")}, indent=1
        )[:4000]
        + engines_bot.logs()[-4000:]
    )
    stories = state["stories"]
    assert {sid: s["state"] for sid, s in stories.items()} == {"S1": "landed", "S2": "landed"}
    assert stories["S1"]["model"] == "gpt-5.5 (codex)"
    assert stories["S2"]["model"] == "claude-haiku-5-5 (claude-code)"
    assert state["plan_stats"]["model"] == "claude-sonnet-5-5 (claude-code)"
    for sid in ("S1", "S2"):
        assert stories[sid]["input_tokens"] == 3 * (3000 + 9000 + 1000)
        assert stories[sid]["cost_usd"] > 0
    branch = state["branch"]
    assert world.state.read_file(repo, branch, "hello.txt") == b"hello\n"
    assert world.state.read_file(repo, branch, "world.txt") == b"world\n"

    # Who reached the provider, with which credential (the gateway adds it).
    calls = [r for r in models.requests if r.protocol != "unknown"]
    auths = {
        (r.protocol, r.model, r.headers.get("x-api-key") or r.headers.get("authorization"))
        for r in calls
    }
    assert auths == {
        ("anthropic", "claude-sonnet-5-5", f"Bearer {CC_TOKEN}"),
        ("anthropic", "claude-haiku-5-5", CC_KEY),
        ("openai-responses", "gpt-5.5", f"Bearer {OPENAI_KEY}"),
    }

    pull = world.state.pulls(repo)[0]
    body = pull.issue.body
    rows = {
        name: line
        for line in body.splitlines()
        for name in (
            "gpt-5.5 (codex)",
            "claude-haiku-5-5 (claude-code)",
            "claude-sonnet-5-5 (claude-code)",
        )
        if line.startswith(f"| {name} |")
    }
    assert len(rows) == 3, body
    for line in rows.values():
        assert re.search(r"\$\d+\.\d+", line), line

    # The sandbox's view, committed by the snooping tool calls: the dummy key, no secret.
    seen = {
        name: world.state.read_file(repo, branch, name)
        for name in ("snoop-codex.txt", "snoop-claude.txt")
    }
    assert b"baro-gateway-dummy-key" in seen["snoop-codex.txt"]
    assert b"ANTHROPIC_BASE_URL=http://127.0.0.1:8377" in seen["snoop-claude.txt"]
    assert b".claude" in seen["snoop-claude.txt"] or b"session" in seen["snoop-claude.txt"]
    places = {
        **seen,
        "logs": engines_bot.logs().encode(),
        "redis": redis_dump(engines_bot.env["BARO_REDIS_URL"]),
        "comments": "\n".join(c.body for c in world.bot_comments(repo, issue.number)).encode(),
        "pull request": body.encode(),
    }
    for secret in SECRETS:
        for place, data in places.items():
            assert secret.encode() not in data, f"{place} holds a secret"


async def test_a_story_failed_on_codex_is_retried_on_claude_code(
    world: World, engines_bot: Bot, models: RunningModelServer
) -> None:
    """Escalation works across engines: the light tier (Codex) cannot make the test pass,
    the retry runs on the standard tier's model, which is Claude Code."""
    plan = {**PLAN, "stories": [{**PLAN["stories"][0], "writes": ["hello.txt"]}]}
    wrong = {
        "tool_calls": [
            {"name": "apply_patch", "raw_arguments": add_file_patch("hello.txt", "nope\n")}
        ],
        "usage": USAGE,
    }
    right = {
        "tool_calls": [
            {
                "name": "Write",
                "arguments": {"file_path": "/workspace/hello.txt", "content": "hello\n"},
            }
        ],
        "usage": USAGE,
    }
    models.set_script(
        {
            "rules": [
                {
                    "name": "S1 on codex, wrong every time",
                    "match": {"protocol": "openai-responses", "any_user": "Implement story S1"},
                    "turns": [wrong, "Done.", wrong, "Done again.", wrong, "Done once more."],
                },
                {
                    "name": "S1 on claude code",
                    "match": {"protocol": "anthropic", "any_user": "Implement story S1"},
                    "turns": [right, "Created hello.txt."],
                },
                {
                    "name": "plan",
                    "match": {"protocol": "anthropic", "any_user": "baro's planner"},
                    "turns": [{"text": json.dumps(plan), "usage": USAGE}],
                },
            ]
        }
    )
    models.reset()
    repo = world.new_repo({"README.md": "# Hi\n", ".github/baro.yml": "review: false\n"})
    issue = world.new_issue(repo, "Greet after a retry")
    await world.deliver_label(engines_bot, repo, issue.number)
    state = wait_run(world, engines_bot, repo, issue.number, what="the run to finish", timeout=240)
    assert state["state"] == "done", json.dumps(state.get("stories"), indent=1)[:3000]
    record = state["stories"]["S1"]
    assert record["state"] == "landed" and record["attempts"] == 2
    assert record["model"] == "claude-haiku-5-5 (claude-code)"
    assert world.state.read_file(repo, state["branch"], "hello.txt") == b"hello\n"
    codex_calls = [r for r in models.requests if r.protocol == "openai-responses"]
    assert len(codex_calls) == 6  # the first attempt: one turn and two repair turns

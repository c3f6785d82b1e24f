"""EngineAgent with the real CLIs: baro runs the story's tests and its pre-commit check
after each CLI turn, and hands failures back to the same CLI session as follow-up turns;
CLI failures end the story with a typed reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.core.plan import Story
from app.llm.prices import load_prices
from runner.agent import StoryBrief, StoryBudget
from runner.engine_agent import EngineAgent, engine_prompt
from runner.engine_session import EngineSession
from runner.gateway import Budget
from runner.sandbox import Sandbox
from testbed.models.engines import EngineName, write_call
from testbed.models.harness import RunningModelServer
from tests.runner.conftest import Area
from tests.runner.engines.test_engine_session import (
    REAL_KEY,
    USAGE,
    model_for,
    path_for,
    script,
)
from tests.runner.engines.test_engine_session import sandbox as sandbox
from tests.runner.engines.test_engine_session import upstream as upstream


def brief(tests: list[str]) -> StoryBrief:
    story = Story(
        id="S1",
        title="The answer file",
        description="Create answer.txt holding the answer.",
        writes=["answer.txt"],
        acceptance=["answer.txt holds the answer"],
        tests=tests,
        tier="light",
    )
    return StoryBrief(
        repo_full_name="acme/demo",
        run_id="r1",
        story=story,
        design_note="Plain text.",
        plan_summary="One file.",
    )


@pytest.fixture
async def make_agent(
    upstream: RunningModelServer,
    sandbox: Sandbox,
    area: Area,
) -> AsyncIterator[Any]:
    sessions: list[EngineSession] = []

    async def make(engine: EngineName, tests: list[str], **kwargs: Any) -> EngineAgent:
        session = EngineSession(
            model_for(engine, upstream),
            REAL_KEY,
            sandbox,
            area.worktree,
            prices=load_prices(),
            budget=Budget(),
            timeout_s=120,
        )
        await session.start()
        sessions.append(session)
        budget = StoryBudget(verify_rounds=1, conflict_rounds=1)
        return EngineAgent(session, brief(tests), area.worktree, sandbox, budget=budget, **kwargs)

    yield make
    for session in sessions:
        await session.close()


def answer_turns(engine: EngineName, first: str, second: str) -> list[dict[str, Any]]:
    path = path_for(engine, "answer.txt")
    return [
        {"tool_calls": [write_call(engine, path, first)], "usage": USAGE},
        {"text": "Wrote the answer.", "usage": USAGE},
        {"tool_calls": [write_call(engine, path, second)], "usage": USAGE},
        {"text": "Fixed the answer.", "usage": USAGE},
    ]


@pytest.mark.parametrize("engine", ["claude-code", "codex"])
async def test_failed_tests_go_back_to_the_cli_and_the_fix_passes(
    upstream: RunningModelServer,
    make_agent: Any,
    area: Area,
    engine: EngineName,
) -> None:
    rule = {
        "match": {"any_user": "Implement story S1"},
        "turns": answer_turns(engine, "41\n", "42\n"),
    }
    script(upstream, rule)
    agent = await make_agent(engine, ["grep -qx 42 answer.txt"])
    result = await agent.work()
    assert result.status == "finished", (result.message, result.evidence)
    assert (area.worktree / "answer.txt").read_text() == "42\n"
    assert result.summary == "Fixed the answer."
    assert [r.passed for r in result.verify_results] == [True]
    assert len(agent.turns) == 2
    follow_up = [r for r in upstream.requests if r.protocol != "unknown"][2]
    assert "Verification failed" in str(follow_up.body)
    assert "end your turn with a short summary" in str(follow_up.body)
    assert result.rounds == 4 and result.usage.cache_read == 4 * 8000
    assert result.cost is not None and result.cost > 0
    assert result.model == f"{model_for(engine, upstream).model_id} ({engine})"
    assert REAL_KEY not in agent.conversation.model_dump_json()


async def test_a_refusal_goes_back_and_one_that_stays_fails_the_story(
    upstream: RunningModelServer,
    make_agent: Any,
    area: Area,
) -> None:
    rule = {
        "match": {"any_user": "Implement story S1"},
        "turns": answer_turns("codex", "1\n", "2\n"),
    }
    script(upstream, rule)

    async def precommit() -> list[str]:
        return ["answer.txt: refused for this test (remove it)"]

    agent = await make_agent("codex", [], precommit=precommit)
    result = await agent.work()
    assert result.status == "failed" and result.reason == "refused"
    assert "answer.txt: refused" in (result.message or "")
    assert len(agent.turns) == 2  # the refusal went back once (verify_rounds=1)
    second = [r for r in upstream.requests if r.protocol != "unknown"][2]
    assert "baro did not commit your work" in str(second.body)


async def test_a_conflict_is_resolved_in_a_follow_up_turn(
    upstream: RunningModelServer,
    make_agent: Any,
    area: Area,
) -> None:
    rule = {
        "match": {"any_user": "Implement story S1"},
        "turns": answer_turns("claude-code", "mine\n", "both\n"),
    }
    script(upstream, rule)
    agent = await make_agent("claude-code", [])
    assert (await agent.work()).status == "finished"
    (area.worktree / "answer.txt").write_text("<<<<<<< ours\nmine\n=======\ntheirs\n>>>>>>> x\n")
    assert await agent.resolve_conflict(["answer.txt"], "answer.txt conflicts")
    assert (area.worktree / "answer.txt").read_text() == "both\n"
    third = [r for r in upstream.requests if r.protocol != "unknown"][2]
    assert "conflict markers" in str(third.body)


@pytest.mark.parametrize("engine", ["claude-code", "codex"])
async def test_a_write_outside_the_worktree_never_reaches_the_host(
    upstream: RunningModelServer,
    make_agent: Any,
    area: Area,
    engine: EngineName,
) -> None:
    outside = area.root / "escaped.txt"
    tool = "Bash" if engine == "claude-code" else "exec_command"
    call = write_call(engine, str(outside), "escaped\n", tool)
    etc = write_call(engine, "/etc/baro-escape", "x\n", tool)
    turns = [
        {"tool_calls": [call]},
        {"tool_calls": [etc]},
        "I could not write there.",
        "Still not.",
    ]
    script(upstream, {"match": {"any_user": "Implement story S1"}, "turns": turns})
    agent = await make_agent(engine, ["test -f answer.txt"])
    result = await agent.work()
    assert not outside.exists() and not Path("/etc/baro-escape").exists()
    assert result.status == "failed" and result.reason == "verification"


async def test_a_cli_that_fails_ends_the_story_with_the_reason(
    upstream: RunningModelServer,
    make_agent: Any,
) -> None:
    turns = [{"fault": {"kind": "malformed"}}]
    script(upstream, {"match": {"any_user": "Implement story S1"}, "turns": turns})
    agent = await make_agent("claude-code", [])
    result = await agent.work()
    assert result.status == "failed"
    assert result.reason == "model_fatal", result
    assert result.message is not None
    assert result.message.startswith("claude-code exited with 1 after the gateway saw: malformed")


def test_the_engine_prompt_speaks_of_turns_not_tools() -> None:
    text = engine_prompt(brief(["pytest -q"]))
    assert "call finish" not in text and "editor" not in text
    assert "end your turn with a short summary" in text and "`pytest -q`" in text

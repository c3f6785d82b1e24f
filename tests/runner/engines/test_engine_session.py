"""The real CLIs as an attempt's engine: inside bubblewrap, in the worktree, reaching the
model only through the bridged gateway, resuming their session on a follow-up turn, and
ending with a plain reason when they fail, hang or run out of budget."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.llm.config import ModelConfig
from app.llm.prices import load_prices
from runner.engine_session import EngineSession
from runner.gateway import Budget
from runner.limits import Limits
from runner.sandbox import Sandbox
from testbed.models.engines import EngineName, write_call
from testbed.models.harness import RunningModelServer, running_model_server
from tests.runner.conftest import Area, make_policy

REAL_KEY = "sk-real-key-the-engine-never-sees-4f2a"
USAGE = {"input": 2000, "cached": 8000, "cache_write": 500, "output": 100}
MODELS: dict[EngineName, ModelConfig] = {
    "claude-code": ModelConfig(
        name="sonnet-cc",
        protocol="anthropic",
        base_url="http://placeholder",
        model_id="claude-sonnet-5-5",
        api_key_env="X",
        engine="claude-code",
    ),
    "codex": ModelConfig(
        name="gpt-codex",
        protocol="openai-responses",
        base_url="http://placeholder",
        model_id="gpt-5.5",
        api_key_env="X",
        engine="codex",
    ),
}


@pytest.fixture
def sandbox(area: Area) -> Sandbox:
    """The runner's default per-process limits: the CLIs' runtimes reserve large
    address ranges (RLIMIT_AS), more than the sandbox tests' 1 GiB."""
    return Sandbox(make_policy(area, memory_bytes=Limits().memory_bytes, processes=256))


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningModelServer]:
    with running_model_server({"rules": [], "api_key": REAL_KEY}) as server:
        yield server


def model_for(engine: EngineName, upstream: RunningModelServer) -> ModelConfig:
    return MODELS[engine].model_copy(update={"base_url": upstream.url})


def path_for(engine: EngineName, name: str) -> str:
    return f"/workspace/{name}" if engine == "claude-code" else name


def session(
    engine: EngineName,
    upstream: RunningModelServer,
    sandbox: Sandbox,
    area: Area,
    budget: Budget | None = None,
    timeout: float = 120,
) -> EngineSession:
    return EngineSession(
        model_for(engine, upstream),
        REAL_KEY,
        sandbox,
        area.worktree,
        prices=load_prices(),
        budget=budget or Budget(),
        timeout_s=timeout,
    )


def script(upstream: RunningModelServer, *rules: dict[str, Any]) -> None:
    upstream.set_script({"api_key": REAL_KEY, "rules": list(rules)})
    upstream.reset()


def secret_free(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert REAL_KEY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("engine", ["claude-code", "codex"])
async def test_an_engine_works_in_the_worktree_and_resumes(
    upstream: RunningModelServer, sandbox: Sandbox, area: Area, engine: EngineName
) -> None:
    first = write_call(engine, path_for(engine, "one.txt"), "1\n")
    second = write_call(engine, path_for(engine, "two.txt"), "2\n")
    rule = {
        "match": {"any_user": "Write one"},
        "turns": [
            {"tool_calls": [first], "usage": USAGE},
            {"text": "Wrote one.", "usage": USAGE},
            {"tool_calls": [second], "usage": USAGE},
            {"text": "Wrote two.", "usage": USAGE},
        ],
    }
    script(upstream, rule)
    async with session(engine, upstream, sandbox, area) as cli:
        one = await cli.turn("Write one.txt saying 1.")
        assert one.ok, one.message or one.output[-3000:]
        assert (area.worktree / "one.txt").read_text() == "1\n"
        assert one.final_text == "Wrote one."
        two = await cli.turn("Now also write two.txt saying 2.")
        assert two.ok, two.message or two.output[-3000:]
        assert (area.worktree / "two.txt").read_text() == "2\n"
        assert two.final_text == "Wrote two."
        home = cli.home
        secret_free(home)
        tally = cli.tally
    calls = [r for r in upstream.requests if r.protocol != "unknown"]
    assert [r.turn for r in calls] == [0, 1, 2, 3]  # the follow-up carried the conversation
    assert all(
        (r.headers.get("x-api-key") or r.headers["authorization"]).removeprefix("Bearer ")
        == REAL_KEY
        for r in calls
    )
    assert tally.calls == 4 and tally.usage.cache_read == 4 * 8000
    assert tally.cost_usd is not None and tally.cost_usd > 0
    assert not home.exists()  # the attempt's HOME goes with the session
    secret_free(area.worktree)


@pytest.mark.parametrize("engine", ["claude-code", "codex"])
async def test_a_budget_cut_ends_the_turn_with_the_reason(
    upstream: RunningModelServer, sandbox: Sandbox, area: Area, engine: EngineName
) -> None:
    calls = [write_call(engine, path_for(engine, f"f{i}.txt"), f"{i}\n") for i in range(5)]
    rule = {"match": {"any_user": "many files"}, "turns": [{"tool_calls": [c]} for c in calls]}
    script(upstream, rule)
    async with session(engine, upstream, sandbox, area, Budget(max_rounds=2)) as cli:
        turn = await cli.turn("Write many files.")
    assert turn.failure == "budget", turn
    assert turn.message is not None and "max_rounds 2" in turn.message


async def test_a_cli_that_hangs_is_killed_at_the_timeout(
    upstream: RunningModelServer, sandbox: Sandbox, area: Area
) -> None:
    # The model answers slower than the engine may take for a whole turn.
    rule = {"match": {"any_user": "slowly"}, "turns": [{"text": "late", "latency": 30}]}
    script(upstream, rule)
    async with session("claude-code", upstream, sandbox, area, timeout=8) as cli:
        turn = await cli.turn("Answer slowly.")
    assert turn.failure == "timeout"
    assert turn.message == "claude-code did not finish within 8 s and was killed"


async def test_a_provider_error_is_named(
    upstream: RunningModelServer, sandbox: Sandbox, area: Area
) -> None:
    upstream.set_script({"api_key": "sk-some-other-key-entirely-000", "rules": []})
    upstream.reset()
    async with session("codex", upstream, sandbox, area, timeout=90) as cli:
        turn = await cli.turn("Anything.")
    assert turn.failure == "provider", turn
    assert turn.message is not None and "401" in turn.message
    assert REAL_KEY not in turn.output


def test_engine_models_must_speak_the_cli_protocol() -> None:
    with pytest.raises(ValueError, match="speaks anthropic"):
        ModelConfig(
            name="x",
            protocol="openai-chat",
            base_url="http://h",
            model_id="m",
            api_key_env="K",
            engine="claude-code",
        )
    with pytest.raises(ValueError, match="only with engine claude-code"):
        ModelConfig(
            name="x",
            protocol="openai-responses",
            base_url="http://h",
            model_id="m",
            api_key_env="K",
            engine="codex",
            auth="subscription",
        )
    assert os.environ.get("BARO_MODEL_KEY") is None

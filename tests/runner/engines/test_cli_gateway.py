"""The real CLIs through the model gateway: they hold only a dummy key, the upstream only
accepts the real one, and a budget stops an attempt mid-run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.llm.prices import load_prices
from app.llm.types import Protocol
from runner.engines import Invocation, claude_invocation, codex_invocation
from runner.gateway import Budget, Gateway, Upstream
from testbed.models.engines import EngineName, write_call, writes_file
from testbed.models.harness import RunningModelServer, running_model_server
from tests.runner.engines.conftest import Sandbox, run_cli_until

REAL_KEY = "sk-real-key-the-cli-never-sees-93b1"
USAGE = {"input": 3000, "cached": 12000, "cache_write": 1000, "output": 200}
ENGINES: dict[EngineName, tuple[Protocol, str]] = {
    "claude-code": ("anthropic", "claude-sonnet-5-5"),
    "codex": ("openai-responses", "gpt-5.5"),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningModelServer]:
    with running_model_server({"rules": [], "api_key": REAL_KEY}) as server:
        yield server


def invocation(engine: EngineName, url: str, place: Sandbox, model: str, task: str) -> Invocation:
    make = claude_invocation if engine == "claude-code" else codex_invocation
    return make(task, base_url=url, home=place.home, model=model)


def target_path(engine: EngineName, place: Sandbox, name: str) -> str:
    # Claude Code's Write asks for an absolute path; apply_patch takes one relative to cwd.
    return str(place.work / name) if engine == "claude-code" else name


def assert_key_absent(place: Sandbox, inv: Invocation, *outputs: str) -> None:
    """Nowhere the CLI could read or leak: its HOME and config, argv, env, output."""
    secret = REAL_KEY.encode()
    for path in [*place.home.rglob("*"), *place.work.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert secret not in path.read_bytes(), path
    assert all(REAL_KEY not in arg for arg in inv.argv)
    assert all(REAL_KEY not in value for value in inv.env.values())
    assert all(REAL_KEY not in text for text in inv.files.values())
    assert all(REAL_KEY not in text for text in outputs)


@pytest.mark.parametrize("engine", list(ENGINES))
async def test_cli_completes_through_the_gateway(
    upstream: RunningModelServer, place: Sandbox, engine: EngineName
) -> None:
    protocol, model = ENGINES[engine]
    upstream.set_script(
        {
            "api_key": REAL_KEY,
            "rules": [
                writes_file(engine, target_path(engine, place, "hello.txt"), "hi\n", usage=USAGE)
            ],
        }
    )
    upstream.reset()
    gateway = Gateway(
        Upstream(protocol, upstream.url, api_key=REAL_KEY, model=model), load_prices(), Budget()
    )
    url = await gateway.start_tcp()
    try:
        inv = invocation(engine, url, place, model, "Create hello.txt saying hi.")
        run = await run_cli_until(inv, place.work)
    finally:
        await gateway.aclose()
    assert run.returncode == 0, run.stderr[-2000:] + run.stdout[-2000:]
    assert (place.work / "hello.txt").read_text() == "hi\n"

    calls = [r for r in upstream.requests if r.protocol == protocol]
    assert [(r.status, r.turn, r.model) for r in calls] == [(200, 0, model), (200, 1, model)]
    for request in calls:
        key = request.headers.get("x-api-key") or request.headers["authorization"]
        assert key.removeprefix("Bearer ") == REAL_KEY
    tally = gateway.tally
    assert (tally.calls, tally.errors) == (2, 0)
    assert tally.cost_usd is not None and tally.cost_usd > 0
    assert tally.usage.cache_read == 2 * 12000 and tally.usage.output == 400
    if engine == "claude-code":
        assert tally.refused == 1  # its HEAD / probe, answered 404 by the gateway itself
    assert_key_absent(place, inv, run.stdout, run.stderr)


@pytest.mark.parametrize("engine", list(ENGINES))
async def test_a_budget_stops_the_cli_mid_run(
    upstream: RunningModelServer, place: Sandbox, engine: EngineName
) -> None:
    protocol, model = ENGINES[engine]
    first = write_call(engine, target_path(engine, place, "first.txt"), "1\n")
    second = write_call(engine, target_path(engine, place, "second.txt"), "2\n")
    rule: dict[str, Any] = {
        "match": {"any_user": "two files"},
        "turns": [{"tool_calls": [first]}, {"tool_calls": [second]}, "Done."],
    }
    upstream.set_script({"api_key": REAL_KEY, "rules": [rule]})
    upstream.reset()
    gateway = Gateway(
        Upstream(protocol, upstream.url, api_key=REAL_KEY, model=model),
        load_prices(),
        Budget(max_rounds=1),
    )
    url = await gateway.start_tcp()
    try:
        inv = invocation(engine, url, place, model, "Write two files.")
        run = await run_cli_until(inv, place.work, stop=gateway.stopped)
    finally:
        await gateway.aclose()
    assert gateway.stop_reason == "budget: max_rounds 1 reached (1 model calls)"
    assert (place.work / "first.txt").read_text() == "1\n"
    assert not Path(place.work / "second.txt").exists()
    assert len([r for r in upstream.requests if r.protocol == protocol]) == 1
    assert gateway.tally.calls == 1 and gateway.tally.refused >= 1
    assert_key_absent(place, inv, run.stdout, run.stderr)


async def test_claude_code_on_a_subscription_token(
    upstream: RunningModelServer, place: Sandbox
) -> None:
    """The CLI holds a dummy API key; the gateway sends the subscription token the way
    Claude Code itself does with CLAUDE_CODE_OAUTH_TOKEN."""
    token = "sk-ant-oat01-subscription-token-never-in-the-sandbox"
    target = str(place.work / "hello.txt")
    upstream.set_script({"api_key": token, "rules": [writes_file("claude-code", target, "hi\n")]})
    upstream.reset()
    model = "claude-sonnet-5-5"
    gateway = Gateway(
        Upstream("anthropic", upstream.url, oauth_token=token, model=model), load_prices()
    )
    url = await gateway.start_tcp()
    try:
        inv = invocation("claude-code", url, place, model, "Create hello.txt saying hi.")
        run = await run_cli_until(inv, place.work)
    finally:
        await gateway.aclose()
    assert run.returncode == 0, run.stderr[-2000:] + run.stdout[-2000:]
    assert (place.work / "hello.txt").read_text() == "hi\n"
    calls = [r for r in upstream.requests if r.protocol == "anthropic"]
    assert len(calls) == 2
    for request in calls:
        assert request.headers["authorization"] == f"Bearer {token}"
        assert "x-api-key" not in request.headers
        betas = request.headers["anthropic-beta"].split(",")
        assert "oauth-2025-04-20" in betas and "claude-code-20250219" in betas
    assert all(token not in value for value in inv.env.values())

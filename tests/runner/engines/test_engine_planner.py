"""The planner on the real Claude Code CLI: it reads a read-only checkout, answers with a
plan, and that plan goes through baro's validation and repair rounds."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.llm.prices import load_prices
from app.worker.engine_planner import make_plan_on_engine
from app.worker.planner import PlannerBudget, PlannerFailed, PlanRequest
from runner.engine_planner import planner_engine
from runner.gateway import Budget
from runner.sandbox import Sandbox
from testbed.models.harness import RunningModelServer
from tests.runner.engines.test_engine_session import REAL_KEY, USAGE, model_for, script
from tests.runner.engines.test_engine_session import sandbox as sandbox
from tests.runner.engines.test_engine_session import upstream as upstream

GOOD = {
    "summary": "Add subtraction.",
    "design_note": "sub(a, b) in calc.py.",
    "stories": [
        {
            "id": "S1",
            "title": "Subtraction",
            "description": "Add sub().",
            "writes": ["calc.py"],
            "acceptance": ["sub(3, 1) == 2"],
            "tier": "light",
        }
    ],
}
BAD = {**GOOD, "stories": [{**GOOD["stories"][0], "depends_on": ["S9"]}]}
REQUEST = PlanRequest("acme/demo", 7, "Add subtraction", "calc.py needs sub().")


@pytest.fixture
def checkout() -> Iterator[Path]:
    # Not under the sandbox tests' data directory: that one is a hidden path.
    repo = Path(tempfile.mkdtemp(prefix="baro-plan-checkout-"))
    repo.chmod(0o755)
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    yield repo
    shutil.rmtree(repo, ignore_errors=True)


def read_then(answers: list[str]) -> dict[str, Any]:
    read = {"name": "Read", "arguments": {"file_path": "/repo/calc.py"}}
    write = {"name": "Write", "arguments": {"file_path": "/repo/calc.py", "content": "x"}}
    turns: list[dict[str, Any]] = [{"tool_calls": [read, write], "usage": USAGE}]
    turns += [{"text": answer, "usage": USAGE} for answer in answers]
    return {"match": {"any_user": "Issue #7"}, "turns": turns}


async def plan(
    upstream: RunningModelServer, sandbox: Sandbox, checkout: Path, repairs: int = 1
) -> Any:
    budget = PlannerBudget(repair_rounds=repairs)
    async with planner_engine(
        model_for("claude-code", upstream),
        REAL_KEY,
        checkout,
        Budget(max_rounds=budget.max_rounds),
        sandbox=sandbox,
        prices=load_prices(),
        timeout_s=120,
    ) as engine:
        return await make_plan_on_engine(engine, REQUEST, budget, "sonnet (claude-code)")


async def test_a_repaired_plan_is_accepted(
    upstream: RunningModelServer, sandbox: Sandbox, checkout: Path
) -> None:
    answers = ["```json\n" + json.dumps(BAD) + "\n```", json.dumps(GOOD)]
    script(upstream, read_then(answers))
    outcome = await plan(upstream, sandbox, checkout)
    assert [s.id for s in outcome.plan.stories] == ["S1"]
    assert outcome.stats.repair_rounds == 1 and outcome.stats.model == "sonnet (claude-code)"
    assert outcome.stats.cost_usd is not None and outcome.stats.cost_usd > 0
    calls = [r for r in upstream.requests if r.protocol == "anthropic"]
    assert len(calls) == 3
    second = json.dumps(calls[1].body)
    assert "return a + b" in second  # it read the checkout
    assert 'unknown story \\"S9\\"' in json.dumps(calls[2].body)  # the errors went back
    assert (checkout / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"


async def test_an_invalid_plan_is_never_accepted(
    upstream: RunningModelServer, sandbox: Sandbox, checkout: Path
) -> None:
    script(upstream, read_then([json.dumps(BAD), "not json at all"]))
    with pytest.raises(PlannerFailed) as failed:
        await plan(upstream, sandbox, checkout, repairs=1)
    assert failed.value.reason == "the plan was still invalid after 1 repair rounds"
    assert failed.value.details and "not valid JSON" in failed.value.details[0]


async def test_a_failing_engine_fails_planning_with_the_reason(
    upstream: RunningModelServer, sandbox: Sandbox, checkout: Path
) -> None:
    fault = {"fault": {"kind": "http", "status": 400, "message": "prompt is too long"}}
    script(upstream, {"match": {"any_user": "Issue #7"}, "turns": [fault]})
    with pytest.raises(PlannerFailed) as failed:
        await plan(upstream, sandbox, checkout)
    assert failed.value.reason.startswith("the planning engine failed: claude-code exited")
    assert "answered 400" in failed.value.reason and REAL_KEY not in failed.value.reason

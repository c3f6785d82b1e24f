"""The planner on an agent CLI (Claude Code, Codex): it explores a read-only checkout with
its own tools and answers with the plan as one JSON object, which goes through the same
validation (`parse_plan`) and repair rounds as baro's own planner; an invalid plan is
never accepted.

The CLI itself runs in the sandbox (`runner/engine_planner.py`); this module only needs
something that takes a turn, handed in by the composition root (`app/cli.py`), so the
worker never imports the runner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from app.core.plan import Plan, PlanStats, parse_plan
from app.llm.config import ModelConfig
from app.llm.types import Usage
from app.worker.planner import (
    SUBMIT_PLAN,
    SYSTEM_PROMPT,
    PlannerBudget,
    PlannerFailed,
    PlannerOutcome,
    PlanRequest,
    first_message,
)


class EngineTurn(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def message(self) -> str | None: ...

    @property
    def final_text(self) -> str: ...


class PlannerEngine(Protocol):
    """One planning session of a CLI: turns resume the same conversation."""

    async def turn(self, prompt: str) -> EngineTurn: ...

    @property
    def usage(self) -> Usage: ...

    @property
    def cost(self) -> Decimal | None: ...


EngineFactory = Callable[
    [ModelConfig, str, Path, Decimal, int], AbstractAsyncContextManager[PlannerEngine]
]
"""(model, secret, read-only checkout, max cost in USD, max model calls) → a started
session, closed on exit."""

ANSWER_RULES = f"""
# How to answer (you are running as a command-line agent)
You cannot change files: the checkout is read-only. Explore it with your read and search \
tools. There is no submit_plan tool here: when you are done, your FINAL answer must be the \
plan and nothing else, as ONE JSON object matching this JSON Schema (no prose around it; a \
```json fence is fine):

{json.dumps(SUBMIT_PLAN.parameters, indent=1)}
"""


def engine_prompt(request: PlanRequest) -> str:
    text = f"{SYSTEM_PROMPT}\n{ANSWER_RULES}\n{first_message(request)}"
    return text.replace("call submit_plan", "answer with the plan as one JSON object").replace(
        "Call submit_plan", "Answer with the plan"
    )


def repair_prompt(errors: list[str]) -> str:
    return (
        "The plan is invalid. Fix exactly these problems and answer again with the WHOLE "
        "plan as one JSON object:\n- " + "\n- ".join(errors)
    )


async def make_plan_on_engine(
    engine: PlannerEngine, request: PlanRequest, budget: PlannerBudget, model_label: str
) -> PlannerOutcome:
    """Turns until the answer is a valid Plan (at most `repair_rounds` repairs), else
    PlannerFailed with the validation errors or the CLI's failure."""
    started = time.monotonic()
    repairs = 0

    def stats() -> PlanStats:
        usage, cost = engine.usage, engine.cost
        return PlanStats(
            model=model_label,
            input_tokens=usage.prompt,
            output_tokens=usage.output,
            cost_usd=None if cost is None else float(cost),
            duration_s=round(time.monotonic() - started, 3),
            repair_rounds=repairs,
        )

    prompt = engine_prompt(request)
    while True:
        turn = await engine.turn(prompt)
        if not turn.ok:
            raise PlannerFailed(f"the planning engine failed: {turn.message}", [], stats())
        text = turn.final_text.strip()
        outcome = parse_plan(text) if text else ["no plan in the answer"]
        if isinstance(outcome, Plan):
            return PlannerOutcome(outcome, stats(), engine.usage)
        if repairs >= budget.repair_rounds:
            raise PlannerFailed(
                f"the plan was still invalid after {budget.repair_rounds} repair rounds",
                outcome,
                stats(),
            )
        repairs += 1
        prompt = repair_prompt(outcome)

"""The planner's CLI session: the checkout mounted read-only at `/repo` (where the CLI
starts), an empty scratch directory as the sandbox's writable worktree, Claude Code's
writing tools off, and the same gateway, bridge and private HOME as a story's engine."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from pathlib import Path

from app.llm.config import ModelConfig
from app.llm.prices import PriceTable, load_prices
from app.settings import Settings
from runner.engine_session import EngineSession
from runner.gateway import Budget
from runner.sandbox import CommandSandbox, Mount, Sandbox
from runner.worker import sandbox_policy

CHECKOUT_MOUNT = "/repo"


@asynccontextmanager
async def planner_engine(
    model: ModelConfig,
    secret: str,
    checkout: Path,
    budget: Budget,
    *,
    sandbox: CommandSandbox,
    prices: PriceTable,
    timeout_s: float,
    engines: Path | None = None,
) -> AsyncIterator[EngineSession]:
    scratch = Path(tempfile.mkdtemp(prefix="baro-plan-scratch-"))
    os.chmod(scratch, 0o711)  # noqa: S103 - lent to the sandbox uid
    session = EngineSession(
        model,
        secret,
        sandbox,
        scratch,
        prices=prices,
        budget=budget,
        timeout_s=timeout_s,
        engines=engines,
        read_only_tools=True,
        extra_mounts=(Mount(checkout, CHECKOUT_MOUNT),),
        inner_cwd=CHECKOUT_MOUNT,
    )
    try:
        await session.start()
        yield session
    finally:
        await session.close()
        shutil.rmtree(scratch, ignore_errors=True)


def planner_engines(
    settings: Settings,
) -> Callable[[ModelConfig, str, Path, Decimal, int], AbstractAsyncContextManager[EngineSession]]:
    """The worker's way to plan on a CLI (handed to it by `app/cli.py`): bubblewrap with
    the runner's policy (engines need its mounts), the gateway's budget from the planner's."""
    sandbox = Sandbox(sandbox_policy(settings))
    prices = load_prices(settings.prices_file)

    def start(
        model: ModelConfig, secret: str, checkout: Path, max_cost_usd: Decimal, max_rounds: int
    ) -> AbstractAsyncContextManager[EngineSession]:
        return planner_engine(
            model,
            secret,
            checkout,
            Budget(max_cost_usd=max_cost_usd, max_rounds=max_rounds),
            sandbox=sandbox,
            prices=prices,
            timeout_s=settings.engine_timeout_seconds,
            engines=settings.engines_dir,
        )

    return start

"""Per-story start-up overhead of each engine against baro's own loop.

One story whose model answers at once (baro: one `finish` call; the CLIs: one text reply,
no tools, zero scripted latency), with no tests or verification, so what is measured is
the engine itself: for baro, the agent loop and one model round trip; for Claude Code and
Codex, the attempt's gateway and bridge, a private HOME, bubblewrap, the CLI's start,
its model calls (Claude Code also probes `HEAD /`) and its exit. Prints JSON (seconds).

    uv run python bench/engines.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.plan import Story  # noqa: E402
from app.llm.catalog import build_client  # noqa: E402
from app.llm.config import ModelConfig  # noqa: E402
from app.llm.meter import turn_pricer  # noqa: E402
from app.llm.prices import load_prices  # noqa: E402
from runner.agent import StoryAgent, StoryBrief  # noqa: E402
from runner.engine_session import EngineSession  # noqa: E402
from runner.gateway import Budget  # noqa: E402
from runner.sandbox import Sandbox, SandboxPolicy  # noqa: E402
from testbed.models.harness import running_model_server  # noqa: E402

KEY = "sk-bench-engines-key-000000000"
STORY = Story(
    id="S1",
    title="Nothing",
    description="Do nothing.",
    writes=["x.txt"],
    acceptance=["nothing"],
    tier="light",
)
BRIEF = StoryBrief("acme/bench", "r1", STORY, "None.", "Nothing.")
SCRIPT = {
    "rules": [
        {
            "name": "baro",
            "match": {"protocol": "openai-chat"},
            "turns": [{"tool_calls": [{"name": "finish", "arguments": {"summary": "ok"}}]}],
        },
        {"name": "cli", "match": {"any_user": "S1"}, "turns": ["Done."]},
    ]
}


def config(engine: str, url: str) -> ModelConfig:
    if engine == "baro":
        return ModelConfig(
            name="b", protocol="openai-chat", base_url=url + "/v1", model_id="deepseek-v4-flash",
            api_key_env="X",
        )  # fmt: skip
    protocol = "anthropic" if engine == "claude-code" else "openai-responses"
    model = "claude-sonnet-5-5" if engine == "claude-code" else "gpt-5.5"
    return ModelConfig(
        name=engine, protocol=protocol, base_url=url, model_id=model, api_key_env="X",
        engine=engine,  # type: ignore[arg-type]
    )  # fmt: skip


async def once(engine: str, url: str, sandbox: Sandbox, http: httpx.AsyncClient) -> float:
    worktree = Path(tempfile.mkdtemp(prefix="baro-bench-wt-"))
    os.chmod(worktree, 0o711)  # noqa: S103 - lent to the sandbox uid
    model = config(engine, url)
    started = time.perf_counter()
    try:
        if engine == "baro":
            client = build_client(model, KEY, http)
            agent = StoryAgent(
                client, BRIEF, worktree, sandbox, pricer=turn_pricer(load_prices(), "x")
            )
            result = await agent.work()
            ok = result.status == "finished"
        else:
            async with EngineSession(
                model, KEY, sandbox, worktree, prices=load_prices(), budget=Budget(),
                timeout_s=120,
            ) as session:  # fmt: skip
                turn = await session.turn("Implement story S1: do nothing, answer Done.")
                ok = turn.ok
        if not ok:
            raise SystemExit(f"{engine}: the story did not finish")
        return time.perf_counter() - started
    finally:
        shutil.rmtree(worktree, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sandbox = Sandbox(SandboxPolicy())
    out: dict[str, object] = {"runs": args.runs}
    with running_model_server(SCRIPT) as server:
        async with httpx.AsyncClient() as http:
            for engine in ("baro", "claude-code", "codex"):
                await once(engine, server.url, sandbox, http)  # warm the page cache
                times = [await once(engine, server.url, sandbox, http) for _ in range(args.runs)]
                out[engine] = {
                    "median_s": round(statistics.median(times), 3),
                    "min_s": round(min(times), 3),
                    "max_s": round(max(times), 3),
                }
    baro = out["baro"]["median_s"]  # type: ignore[index]
    for engine in ("claude-code", "codex"):
        entry = out[engine]
        entry["overhead_vs_baro_s"] = round(entry["median_s"] - baro, 3)  # type: ignore[index]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())

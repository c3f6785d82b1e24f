"""What a Prometheus scrape of `/metrics` costs, and what recording one fact costs.

Starts a private redis-server, fills it like a busy deployment (runs in the run store,
stories and model calls recorded, rate limits from many installations, runner presences,
and unrelated keys that a SCAN has to walk past), then times `read_snapshot` + rendering
(what `GET /metrics` does) and single `Metrics` writes, and prints JSON.

    uv run python bench/metrics_scrape.py --runs 200 --models 20 --installations 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.run import Run  # noqa: E402
from app.llm.types import Usage  # noqa: E402
from app.metrics import Metrics, read_snapshot, render  # noqa: E402
from app.store import RunStore  # noqa: E402
from tests.conftest import RedisServer  # noqa: E402


async def fill(redis: Redis, args: argparse.Namespace) -> None:
    metrics = Metrics(redis)
    store = RunStore(redis, metrics)
    for i in range(args.runs):
        run = Run(
            id=f"r{i:011d}",
            delivery_id=f"d{i}",
            installation_id=1 + i % args.installations,
            owner="acme",
            repo=f"repo{i % 50}",
            issue_number=i + 1,
            issue_title="bench",
            requester="maintainer",
            trigger="label",
        )
        await store.create(run)
    for m in range(args.models):
        for _ in range(20):
            usage = Usage(uncached_input=4_000, cache_read=8_000, output=600)
            await metrics.model_call(f"model-{m}", usage, Decimal("0.0014"))
    for tier in ("light", "standard", "heavy"):
        for n in range(200):
            await metrics.story_started(tier, queue_wait_s=(n % 50) / 10)
    for inst in range(args.installations):
        await metrics.rate_limit(inst + 1, "core", 4_000 - inst)
    for r in range(args.runners):
        await metrics.runner_alive(f"runner-{r}", slots=2, busy=r % 3, ttl_s=60)
    for event in ("issues", "issue_comment", "pull_request"):
        for outcome in ("queued", "duplicate", "ignored"):
            await metrics.delivery(event, outcome)
    async with redis.pipeline(transaction=False) as pipe:
        for k in range(args.other_keys):
            pipe.set(f"arq:result:bench-{k}", b"x" * 64)
        await pipe.execute()


def quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2)}


async def measure(redis_url: str, args: argparse.Namespace) -> dict[str, object]:
    redis = Redis.from_url(redis_url)
    try:
        await fill(redis, args)
        metrics = Metrics(redis)
        store = RunStore(redis, metrics)
        scrapes: list[float] = []
        body = b""
        for _ in range(args.scrapes):
            started = time.perf_counter()
            body = render(await read_snapshot(metrics, store.active_runs))
            scrapes.append(time.perf_counter() - started)
        writes: list[float] = []
        for n in range(args.scrapes):
            started = time.perf_counter()
            await metrics.delivery("issues", "queued" if n % 2 else "duplicate")
            writes.append(time.perf_counter() - started)
        return {
            "runs_active": args.runs,
            "models": args.models,
            "installations": args.installations,
            "other_keys": args.other_keys,
            "scrape": quantiles(scrapes),
            "scrape_bytes": len(body),
            "series_lines": sum(1 for line in body.splitlines() if not line.startswith(b"#")),
            "record_one_fact": quantiles(writes),
        }
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=200, help="active runs in the store")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--installations", type=int, default=500)
    parser.add_argument("--runners", type=int, default=16)
    parser.add_argument("--other-keys", type=int, default=50_000, help="keys SCAN walks past")
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        print(json.dumps(asyncio.run(measure(server.url, args)), indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()

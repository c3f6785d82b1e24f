"""The model gateway's added latency on loopback, against calling the testbed directly.

Starts the scripted model server and the gateway (`python -m runner.gateway`) as their
own processes, then from this one sends sequential requests over keep-alive connections:
a non-streamed Anthropic reply (full round trip) and a streamed one (time to the first
body byte), each directly and through the gateway. Prints p50/p99 and the difference as
JSON. Goal: ≤ 2 ms p99 added for the non-streamed reply.

    uv run python bench/gateway.py --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

KEY = "sk-bench-real-key"
SCRIPT = {"api_key": KEY, "rules": [{"turns": ["A short scripted reply for the benchmark."]}]}
BODY = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say something short."}],
}
DUMMY = "sk-dummy"


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


async def wait_up(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(cut[49] * 1000, 3), "p99_ms": round(cut[98] * 1000, 3)}


async def round_trips(url: str, count: int, *, stream: bool, key: str) -> list[float]:
    """Seconds per request: whole reply, or (streamed) until the first body byte."""
    body = {**BODY, "stream": stream}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(count):
            began = time.perf_counter()
            async with client.stream("POST", "/v1/messages", json=body, headers=headers) as reply:
                first = True
                async for _chunk in reply.aiter_raw():
                    if first and stream:
                        samples.append(time.perf_counter() - began)
                    first = False
                if reply.status_code != 200:
                    raise RuntimeError(f"HTTP {reply.status_code}")
            if not stream:
                samples.append(time.perf_counter() - began)
    return samples


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (from /proc): the gateway's own cost per
    request, which the machine's other load does not inflate the way it does latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    direct: str, gateway: str, count: int, warmup: int, gateway_pid: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for stream in (False, True):
        name = "streamed_ttfb" if stream else "non_streamed"
        await round_trips(direct, warmup, stream=stream, key=KEY)
        await round_trips(gateway, warmup, stream=stream, key=DUMMY)
        # Interleave the two series in blocks so drift affects both alike.
        plain: list[float] = []
        through: list[float] = []
        block = max(1, count // 10)
        cpu = 0.0
        for _ in range(10):
            plain += await round_trips(direct, block, stream=stream, key=KEY)
            before = cpu_seconds(gateway_pid)
            through += await round_trips(gateway, block, stream=stream, key=DUMMY)
            cpu += cpu_seconds(gateway_pid) - before
        a, b = quantiles(plain), quantiles(through)
        results[name] = {
            "direct": a,
            "gateway": b,
            "added_p50_ms": round(b["p50_ms"] - a["p50_ms"], 3),
            "added_p99_ms": round(b["p99_ms"] - a["p99_ms"], 3),
            "gateway_cpu_ms_per_request": round(cpu * 1000 / len(through), 3),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "script.json"
        script.write_text(json.dumps(SCRIPT))
        port = free_port()
        model = start(
            [sys.executable, "-m", "testbed.models", "--script", str(script), "--port",
             str(port), "--log-level", "warning"]
        )  # fmt: skip
        env = {**os.environ, "BARO_UPSTREAM_KEY": KEY}
        gw_port = free_port()
        gateway = start(
            [sys.executable, "-m", "runner.gateway", "--protocol", "anthropic", "--upstream",
             f"http://127.0.0.1:{port}", "--port", str(gw_port)],
            env,
        )  # fmt: skip
        try:
            direct, through = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{gw_port}"
            asyncio.run(wait_up(direct + "/_testbed/health"))
            asyncio.run(wait_up(through + "/v1/models"))
            results = asyncio.run(measure(direct, through, args.requests, args.warmup, gateway.pid))
        finally:
            for proc in (gateway, model):
                proc.terminate()
                proc.wait(10)
    load = os.getloadavg()[0]
    report = {"benchmark": "gateway", "requests": args.requests, "load_average_1m": load}
    print(json.dumps({**report, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

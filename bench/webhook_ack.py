"""Webhook acknowledgement latency under load, against the real web process on loopback.

Starts a private redis-server and `baro-bot web` (uvicorn), then fires signed `issues.labeled`
deliveries (each a new trigger, so each one is deduplicated and enqueued) at a fixed rate
from concurrent clients, and prints p50/p99 latency and throughput as JSON.

    uv run python bench/webhook_ack.py --rate 200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.github.delivery import github_headers, sign  # noqa: E402
from tests.conftest import FIXTURES, RedisServer, free_port  # noqa: E402

SECRET = "bench-secret"
CONNECTIONS = 16


def private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def payload() -> bytes:
    data: dict[str, Any] = json.loads((FIXTURES / "issues" / "labeled.payload.json").read_text())
    data = copy.deepcopy(data)
    data["label"]["name"] = "baro"
    data["installation"] = {"id": 1, "node_id": "x"}
    return json.dumps(data).encode()


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError("web process exited")
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("web did not become healthy")


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost far less CPU than
    the server it measures, which httpx does not on two cores."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def fire(url: str, rate: float, seconds: float, body: bytes) -> dict[str, Any]:
    """Open loop: request i is due at start + i/rate; latency counts from when it was due,
    so a server that falls behind shows it (no coordinated omission)."""
    host, port = url.removeprefix("http://").split(":")
    signature = sign(SECRET, body)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = int(rate * seconds)
    queue: asyncio.Queue[float | None] = asyncio.Queue()

    async def client() -> None:
        conn = Connection(host, int(port))
        while (due := await queue.get()) is not None:
            headers = github_headers("issues", str(uuid.uuid4()), signature)
            headers.pop("Content-Type")
            headers["Content-Type"] = "application/json"
            status = await conn.post("/webhooks/github", headers, body)
            latencies.append((time.perf_counter() - due) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            queue.task_done()

    clients = [asyncio.create_task(client()) for _ in range(CONNECTIONS)]
    for _ in range(100):  # warm-up
        queue.put_nowait(time.perf_counter())
    await queue.join()
    latencies.clear()
    statuses.clear()
    began = time.perf_counter()
    for i in range(total):
        due = began + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)
    for _ in clients:
        queue.put_nowait(None)
    await asyncio.gather(*clients)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "deliveries": total,
        "offered_per_s": rate,
        "achieved_per_s": round(total / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "max_ms": round(latencies[-1], 2),
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    redis = RedisServer()
    redis.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key.pem"
        key_file.write_text(private_key())
        env = {
            **os.environ,
            "BARO_GITHUB_APP_ID": "1",
            "BARO_GITHUB_PRIVATE_KEY_FILE": str(key_file),
            "BARO_GITHUB_WEBHOOK_SECRET": SECRET,
            "BARO_GITHUB_APP_SLUG": "baro-bench",
            "BARO_REDIS_URL": redis.url,
            "BARO_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "web", "--port", str(port)], env=env, cwd=ROOT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_healthy(url, proc))
            result = asyncio.run(fire(url, args.rate, args.seconds, payload()))
            result["payload_bytes"] = len(payload())
            print(json.dumps(result))
        finally:
            proc.terminate()
            proc.wait(10)
            redis.stop()


if __name__ == "__main__":
    main()

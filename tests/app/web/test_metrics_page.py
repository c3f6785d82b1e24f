"""`GET /metrics` and delivery counting on the real web app under uvicorn."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.settings import Settings
from app.web.app import create_app
from testbed.github.server import bind_socket
from tests.conftest import FIXTURES, RedisServer

SECRET = "whsec-metrics-test"
TOKEN = "metrics-token-0123456789"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def settings_for(pem: str, redis_url: str, **extra: Any) -> Settings:
    return Settings(
        github_app_id=1,
        github_private_key=SecretStr(pem),
        github_webhook_secret=SecretStr(SECRET),
        github_app_slug="baro-test",
        redis_url=redis_url,
        **extra,
    )


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The web app under a real uvicorn (lifespan included) in a thread; yields its URL."""
    sock = bind_socket()
    config = uvicorn.Config(create_app(settings), loop="asyncio", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def labeled_payload() -> bytes:
    raw = json.loads((FIXTURES / "issues" / "labeled.payload.json").read_text())
    payload = copy.deepcopy(raw)
    payload["label"]["name"] = "baro"
    payload["installation"] = {"id": 77, "node_id": "x"}
    return json.dumps(payload).encode()


def deliver(
    url: str, event: str, body: bytes, *, delivery: str | None = None, secret: str = SECRET
) -> httpx.Response:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-hub-signature-256": signature,
    }
    return httpx.post(url + "/webhooks/github", content=body, headers=headers, timeout=10)


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def deliveries(samples: Samples, event: str, outcome: str) -> float:
    key = (("event", event), ("outcome", outcome))
    return samples.get(("baro_webhook_deliveries_total", key), 0.0)


def test_deliveries_are_counted_by_event_and_outcome(pem: str, redis_url: str) -> None:
    with serving(settings_for(pem, redis_url)) as url:
        empty = scrape(url)
        assert empty[("baro_runners", ())] == 0
        assert not [k for k in empty if k[0] == "baro_webhook_deliveries_total"]

        body = labeled_payload()
        assert deliver(url, "issues", body, delivery="d-1").status_code == 202
        assert deliver(url, "issues", body, delivery="d-1").status_code == 200  # duplicate
        assert deliver(url, "issues", body, secret="wrong").status_code == 401
        assert deliver(url, "push", b"{}").status_code == 202  # ignored
        assert deliver(url, "issues", b"not json").status_code == 400
        assert deliver(url, "issues", b"[" * 10_000 + b"]" * 10_000).status_code == 400
        assert deliver(url, "ping", b"{}").status_code == 200
        got = scrape(url)

    assert deliveries(got, "issues", "queued") == 1
    assert deliveries(got, "issues", "duplicate") == 1
    assert deliveries(got, "unverified", "bad_signature") == 1
    assert deliveries(got, "push", "ignored") == 1
    assert deliveries(got, "issues", "malformed") == 2
    assert deliveries(got, "ping", "ping") == 1


def test_a_configured_token_is_required(pem: str, redis_url: str) -> None:
    with serving(settings_for(pem, redis_url, metrics_token=SecretStr(TOKEN))) as url:
        bare = httpx.get(url + "/metrics", timeout=10)
        wrong = httpx.get(url + "/metrics", headers={"authorization": "Bearer nope"}, timeout=10)
        basic = httpx.get(url + "/metrics", headers={"authorization": f"Basic {TOKEN}"})
        assert (bare.status_code, wrong.status_code, basic.status_code) == (401, 401, 401)
        assert bare.headers["www-authenticate"] == "Bearer"
        assert "baro_" not in bare.text + wrong.text + basic.text
        got = scrape(url, authorization=f"Bearer {TOKEN}")
        assert ("baro_runner_slots", ()) in got


def test_redis_down_is_503_and_refused_deliveries_are_counted_after(pem: str) -> None:
    redis = RedisServer()
    redis.start()
    try:
        with serving(settings_for(pem, redis.url)) as url:
            assert scrape(url)[("baro_runners", ())] == 0
            redis.stop()
            down = httpx.get(url + "/metrics", timeout=10)
            assert down.status_code == 503
            assert "Redis is unreachable" in down.text
            assert deliver(url, "issues", labeled_payload()).status_code == 503
            redis.start()
            got = scrape(url)
            assert deliveries(got, "issues", "queue_unavailable") == 1
            assert scrape(url) == got  # sent once, not on every scrape
    finally:
        redis.stop()

"""The web process's part of the metrics: counting deliveries and serving `GET /metrics`."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app.metrics import read_snapshot, render
from app.store import RunStore
from app.web.state import web_state

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
UNVERIFIED = "unverified"
"""The event label when the signature was not checked: the header is anyone's to choose,
and a free-form label would let anyone grow the metrics without bound."""


def delivery_outcome(status: int, body: bytes) -> tuple[str, bool]:
    """(outcome, signature verified) of a webhook answer from `app.web.app.github_webhook`."""
    if status == 401:
        return "bad_signature", False
    if status == 413:
        return "too_large", False
    if status == 400 and not body:
        return "disconnected", False  # the client left before the body was read
    if status == 400:
        return "malformed", True
    if status == 503:
        return "queue_unavailable", True
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    for outcome in ("queued", "duplicate", "ignored"):
        if outcome in answer:
            return outcome, True
    if answer.get("event") == "ping":
        return "ping", True
    return f"http_{status}", True


def count_deliveries(handler: Endpoint) -> Endpoint:
    """Wrap the webhook endpoint: each delivery is counted by event and outcome."""

    async def counted(request: Request) -> Response:
        state = web_state(request)
        try:
            response = await handler(request)
        except Exception:
            await state.metrics.delivery(_event(request, verified=False), "error")
            raise
        outcome, verified = delivery_outcome(response.status_code, bytes(response.body))
        # Counted after the answer is sent: GitHub's 10 s clock should not wait on metrics.
        response.background = BackgroundTask(
            state.metrics.delivery, _event(request, verified=verified), outcome
        )
        return response

    return counted


def _event(request: Request, *, verified: bool) -> str:
    if not verified:
        return UNVERIFIED
    return request.headers.get("x-github-event") or "none"


def bearer_matches(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text for every process, read from Redis; 503 while Redis is unreachable."""
    state = web_state(request)
    token = state.settings.metrics_token
    if token is not None and not bearer_matches(
        request.headers.get("authorization"), token.get_secret_value()
    ):
        return PlainTextResponse(
            "unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        snapshot = await read_snapshot(
            state.metrics, RunStore(state.redis, state.metrics).active_runs
        )
    except (RedisError, OSError) as exc:
        log.warning("metrics unavailable: Redis unreachable (%s)", type(exc).__name__)
        return PlainTextResponse("metrics unavailable: Redis is unreachable\n", status_code=503)
    return Response(render(snapshot), headers={"Content-Type": CONTENT_TYPE_LATEST})

"""The web process: verify, dedup, enqueue, answer. No GitHub or model work in a request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import keys
from app.logs import bind_log_context
from app.pending import PendingTriggers, enqueue_intake
from app.queue import HEALTH_CHECK_INTERVAL, ORCHESTRATOR_QUEUE, RUNNER_QUEUE, connect
from app.run_links import RunLinks
from app.settings import Settings
from app.web.metrics_page import count_deliveries, metrics_endpoint
from app.web.run_page import RunPages
from app.web.setup import SetupPages, SetupSettings
from app.web.state import WebState, web_state
from app.web.webhooks import BotIdentity, Ignored, MalformedPayload, route, signature_valid

log = logging.getLogger(__name__)

HEALTH_SUFFIX = ":health-check"  # arq's heartbeat key, refreshed every health_check_interval


class BodyTooLarge(Exception):
    pass


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def github_webhook(request: Request) -> Response:
    state = web_state(request)
    try:
        body = await _read_capped(request, state.settings.webhook_max_body_bytes)
    except BodyTooLarge:
        return JSONResponse({"error": "payload too large"}, status_code=413)
    except ClientDisconnect:
        return Response(status_code=400)

    if not signature_valid(state.secret, body, request.headers.get("x-hub-signature-256")):
        return Response(status_code=401)

    event = request.headers.get("x-github-event")
    delivery = request.headers.get("x-github-delivery")
    if not event or not delivery:
        return JSONResponse(
            {"error": "missing X-GitHub-Event or X-GitHub-Delivery header"}, status_code=400
        )
    bind_log_context(delivery=delivery, event=event)
    if event == "ping":
        return JSONResponse({"ok": True, "event": "ping"})

    try:
        outcome = route(event, delivery, body, state.bot)
    except MalformedPayload as exc:
        log.warning("malformed %s delivery %s: %s", event, delivery, exc)
        return JSONResponse({"error": str(exc)}, status_code=400)
    if isinstance(outcome, Ignored):
        return JSONResponse({"ignored": outcome.reason}, status_code=202)
    bind_log_context(installation=outcome.installation_id)

    key = keys.delivery(delivery)
    try:
        fresh = await state.redis.set(key, "1", nx=True, ex=state.settings.delivery_dedup_seconds)
        if not fresh:
            return JSONResponse({"duplicate": delivery})
        try:
            payload = outcome.model_dump(mode="json")
            await PendingTriggers(state.redis).record(delivery, payload)
            await enqueue_intake(state.redis, payload, delivery, fresh=False)
        except BaseException:
            await state.redis.delete(key)
            await PendingTriggers(state.redis).forget(delivery)
            raise
    except (RedisError, OSError) as exc:
        log.error("redis unavailable for delivery %s: %s", delivery, type(exc).__name__)
        return JSONResponse(
            {"error": "queue unavailable; redeliver this delivery later"}, status_code=503
        )
    log.info("queued %s delivery %s (%s)", event, delivery, outcome.kind)
    return JSONResponse({"queued": delivery}, status_code=202)


async def healthz(request: Request) -> Response:
    """Redis decides this process's health (503 makes deliveries redeliverable); the worker
    and runner queues' arq heartbeats are reported so an operator sees a dead process group
    ("degraded"), without the platform restarting the web process for it."""
    state = web_state(request)
    try:
        await state.redis.ping()
        beats: dict[str, Any] = {}
        ages: dict[str, float | None] = {}
        for name, queue in (("worker", ORCHESTRATOR_QUEUE), ("runner", RUNNER_QUEUE)):
            async with state.redis.pipeline(transaction=False) as pipe:
                pipe.get(f"{queue}{HEALTH_SUFFIX}")
                pipe.pttl(f"{queue}{HEALTH_SUFFIX}")
                beats[name], ttl_ms = await pipe.execute()
            ages[f"{name}_heartbeat_age_s"] = heartbeat_age(ttl_ms)
    except (RedisError, OSError) as exc:
        return JSONResponse(
            {"status": "unhealthy", "redis": f"unreachable ({type(exc).__name__})"},
            status_code=503,
        )
    queues = {
        name: beat.decode() if isinstance(beat, bytes) else "no heartbeat (no live process)"
        for name, beat in beats.items()
    }
    degraded = any(not isinstance(beat, bytes) for beat in beats.values())
    return JSONResponse(
        {"status": "degraded" if degraded else "ok", "redis": "ok", **queues, **ages}
    )


def heartbeat_age(ttl_ms: int | None) -> float | None:
    """arq writes its heartbeat with a TTL of interval + 1 s, so the remaining TTL tells how
    long ago it was written (None: no heartbeat)."""
    if ttl_ms is None or ttl_ms < 0:
        return None
    return round(max(0.0, HEALTH_CHECK_INTERVAL + 1 - ttl_ms / 1000), 1)


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect(settings.redis_url)
        app.state.baro = WebState(
            settings=settings,
            redis=redis,
            secret=settings.github_webhook_secret.get_secret_value().encode(),
            bot=BotIdentity(
                app_id=settings.github_app_id,
                slug=settings.github_app_slug,
                trigger_label=settings.trigger_label,
            ),
        )
        try:
            yield
        finally:
            await redis.aclose(close_connection_pool=True)  # the pool is ours (app.queue.connect)

    return Starlette(
        routes=[
            Route("/webhooks/github", count_deliveries(github_webhook), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *RunPages.create(RunLinks.from_settings(settings)).routes(),  # signed links only
            *SetupPages(SetupSettings.from_settings(settings)).routes(),  # App registration
        ],
        lifespan=lifespan,
    )

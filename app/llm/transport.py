"""One JSON POST with typed errors, shared by the wire-protocol clients."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from app.llm.errors import RetryableError, error_from_response, redact


@dataclass(frozen=True)
class Reply:
    body: dict[str, Any]
    requested_at: datetime
    latency_s: float


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str],
    body: dict[str, Any],
    timeout_s: float,
    model: str,
    secret: str,
) -> Reply:
    """POST `body`; 2xx JSON object → `Reply`, anything else → a typed `ModelError`."""
    requested_at = datetime.now(UTC)
    started = time.monotonic()
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0))
    try:
        response = await http.post(url, json=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise RetryableError(
            f"no reply within {timeout_s:g}s ({type(exc).__name__})", model=model
        ) from exc
    except httpx.TransportError as exc:
        detail = redact(str(exc), secret) or type(exc).__name__
        raise RetryableError(f"connection error: {detail}", model=model) from exc
    latency = time.monotonic() - started
    if not response.is_success:
        raise error_from_response(
            response.status_code, response.headers, response.content, model=model, secret=secret
        )
    try:
        data = response.json()
    except ValueError as exc:
        snippet = redact(response.text, secret)[:200]
        raise RetryableError(
            f"HTTP {response.status_code} reply is not JSON: {snippet!r}",
            model=model,
            status=response.status_code,
        ) from exc
    if not isinstance(data, dict):
        raise RetryableError(
            f"HTTP {response.status_code} reply is not a JSON object",
            model=model,
            status=response.status_code,
        )
    return Reply(data, requested_at, latency)

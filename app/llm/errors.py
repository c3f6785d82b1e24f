"""Typed model-call errors: retry the transient ones, surface the rest verbatim.

A quota or billing error must fail the story with the provider's own words, so
`FatalError` keeps the provider's message, status, type and code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 409, 429, 529})
FATAL_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        "insufficient_balance",
        "billing_error",
    }
)
_MAX_MESSAGE = 2000


class ModelError(Exception):
    """A model call failed; `message` is the provider's text (or ours if it had none)."""

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
    ) -> None:
        self.message = message
        self.model = model
        self.status = status
        self.error_type = error_type
        self.code = code
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.model or "model"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        kind = self.code if self.code and self.code != self.error_type else None
        if self.error_type:
            parts.append(self.error_type + (f"/{kind}" if kind else ""))
        elif kind:
            parts.append(kind)
        return ": ".join([" ".join(parts), self.message])


class RetryableError(ModelError):
    """Transient: rate limit, overload, 5xx, timeout, connection failure."""

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, model=model, status=status, error_type=error_type, code=code)


class FatalError(ModelError):
    """Not worth retrying: auth, billing/quota, bad request, unknown model…"""


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """`retry-after-ms` (OpenAI) wins over `retry-after` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from OpenAI/DeepSeek/Anthropic-shaped error bodies."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict):
        return None, None, None

    def text(key: str) -> str | None:
        value = err.get(key)
        return str(value) if value is not None and value != "" else None

    return text("message"), text("type"), text("code")


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    model: str,
    secret: str = "",
) -> ModelError:
    """Classify a non-2xx reply. `secret` is scrubbed from the message if echoed."""
    message, error_type, code = _error_fields(body)
    if message is None:
        message = body.decode("utf-8", "replace").strip() or f"HTTP {status} with an empty body"
    message = redact(message, secret)[:_MAX_MESSAGE]
    fatal = error_type in FATAL_CODES or code in FATAL_CODES
    if not fatal and (status in RETRYABLE_STATUSES or status >= 500):
        return RetryableError(
            message,
            model=model,
            status=status,
            error_type=error_type,
            code=code,
            retry_after=retry_after_seconds(headers),
        )
    return FatalError(message, model=model, status=status, error_type=error_type, code=code)


def redact(text: str, secret: str) -> str:
    """Never let an API key travel inside an error message or log line."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text

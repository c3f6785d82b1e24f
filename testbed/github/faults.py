"""Fault injection: make chosen requests fail or stall the way GitHub does under load.

Faults are matched in insertion order on method and a regex searched in the request path;
each use counts down `times` (None = forever). A fault with `status=None` only delays.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from testbed.github.errors import error_body

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID."
)
PRIMARY_RATE_LIMIT_MESSAGE = "API rate limit exceeded for installation."


@dataclass
class Fault:
    """One injected behaviour. `body` may be a dict (JSON), str or bytes; None = GitHub's."""

    method: str | None
    path: re.Pattern[str]
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | str | bytes | None = None
    times: int | None = 1
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path.search(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def render_body(self) -> tuple[bytes, str]:
        """Bytes and content type to answer with."""
        if self.status is None:
            return b"", "application/json; charset=utf-8"
        body = self.body
        if body is None:
            body = error_body(self.status, _default_message(self.status))
        if isinstance(body, dict):
            return json.dumps(body).encode(), "application/json; charset=utf-8"
        if isinstance(body, str):
            return body.encode(), "text/plain; charset=utf-8"
        return body, "application/octet-stream"

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path.pattern,
            "status": self.status,
            "headers": self.headers,
            "times": self.times,
            "delay": self.delay,
            "hits": self.hits,
        }


def _default_message(status: int) -> str:
    return {
        400: "Bad Request",
        401: "Bad credentials",
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        422: "Validation Failed",
        429: "Too Many Requests",
        500: "Server Error",
        502: "Server Error",
        503: "Service Unavailable",
    }.get(status, "Error")


class FaultSet:
    """The faults armed on one testbed; thread-safe (tests arm them from the main thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        *,
        method: str | None = None,
        path: str = ".*",
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | str | bytes | None = None,
        times: int | None = 1,
        delay: float = 0.0,
    ) -> Fault:
        fault = Fault(
            method=method,
            path=re.compile(path),
            status=status,
            headers=dict(headers or {}),
            body=body,
            times=times,
            delay=delay,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The first live fault matching this request, counted as used."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def snapshot(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    # Presets -------------------------------------------------------------------------

    def secondary_rate_limit(
        self,
        *,
        method: str | None = None,
        path: str = ".*",
        retry_after: int | None = 1,
        status: int = 403,
        times: int | None = 1,
    ) -> Fault:
        """GitHub's secondary limit: 403 (or 429) with `retry-after`, remaining still > 0."""
        headers = {"x-ratelimit-remaining": "4999"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        return self.add(
            method=method,
            path=path,
            status=status,
            headers=headers,
            body=error_body(
                status,
                SECONDARY_RATE_LIMIT_MESSAGE,
                documentation_url="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            ),
            times=times,
        )

    def too_many_requests(
        self, *, method: str | None = None, path: str = ".*", retry_after: int = 1, times: int = 1
    ) -> Fault:
        return self.secondary_rate_limit(
            method=method, path=path, retry_after=retry_after, status=429, times=times
        )

    def primary_rate_limit(
        self, *, method: str | None = None, path: str = ".*", reset_at: int, times: int = 1
    ) -> Fault:
        """Primary limit exhausted: 403, `x-ratelimit-remaining: 0`, reset at epoch `reset_at`."""
        return self.add(
            method=method,
            path=path,
            status=403,
            headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset_at)},
            body=error_body(403, PRIMARY_RATE_LIMIT_MESSAGE),
            times=times,
        )

    def server_error(
        self, *, method: str | None = None, path: str = ".*", status: int = 500, times: int = 1
    ) -> Fault:
        return self.add(method=method, path=path, status=status, times=times)

    def validation_failed(
        self,
        *,
        method: str | None = None,
        path: str = ".*",
        errors: list[dict[str, Any]] | None = None,
        times: int = 1,
    ) -> Fault:
        return self.add(
            method=method,
            path=path,
            status=422,
            body=error_body(422, "Validation Failed", errors or []),
            times=times,
        )

    def slow(
        self, *, method: str | None = None, path: str = ".*", delay: float, times: int | None = 1
    ) -> Fault:
        """Answer normally, but only after `delay` seconds."""
        return self.add(method=method, path=path, delay=delay, times=times)

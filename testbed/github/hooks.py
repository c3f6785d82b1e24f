"""The App webhook's delivery log: every attempt the testbed made, as GitHub records it.

GitHub never retries a failed delivery; it keeps each attempt (`GET /app/hook/deliveries`)
and redelivers one on request, within 3 days. The log keeps what a redelivery needs (the
raw body, the event, the guid) next to GitHub's hook-delivery fields. Tests read it from the
main thread while the server writes from its own, hence the lock. No import of `state`:
state imports this module.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

REDELIVERY_WINDOW = timedelta(days=3)
FIRST_DELIVERY_ID = 12_000_000_001  # GitHub's ids are large and increasing

JSON = dict[str, Any]


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_text(status_code: int, failure: str | None = None) -> str:
    """GitHub's `status`: "OK" for 2xx, "Invalid HTTP Response: 503", or the failure."""
    if failure is not None:
        return failure
    if 200 <= status_code < 300:
        return "OK"
    return f"Invalid HTTP Response: {status_code}"


@dataclass
class HookDelivery:
    """One delivery attempt (a redelivery is a new attempt with the same guid)."""

    id: int
    guid: str
    app_id: int
    event: str
    action: str | None
    installation_id: int | None
    repository_id: int | None
    url: str
    body: bytes
    request_headers: dict[str, str]
    delivered_at: datetime
    redelivery: bool
    duration: float
    status_code: int
    status: str
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def payload(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def item(self) -> JSON:
        """The list shape (`HookDeliveryItem`)."""
        return {
            "id": self.id,
            "guid": self.guid,
            "delivered_at": _ts(self.delivered_at),
            "redelivery": self.redelivery,
            "duration": round(self.duration, 3),
            "status": self.status,
            "status_code": self.status_code,
            "event": self.event,
            "action": self.action,
            "installation_id": self.installation_id,
            "repository_id": self.repository_id,
            "throttled_at": None,
        }

    def full(self) -> JSON:
        """The single-delivery shape (`HookDelivery`), with request and response."""
        payload = self.payload()
        return {
            **self.item(),
            "url": self.url,
            "request": {
                "headers": dict(self.request_headers),
                "payload": payload if isinstance(payload, dict) else None,
            },
            "response": {
                "headers": dict(self.response_headers),
                "payload": self.response_body,
            },
        }


def _ids(payload: Any) -> tuple[str | None, int | None, int | None]:
    """(action, installation id, repository id) of a payload, as GitHub lists them."""
    if not isinstance(payload, dict):
        return None, None, None
    action = payload.get("action")
    inst, repo = payload.get("installation"), payload.get("repository")
    return (
        action if isinstance(action, str) else None,
        inst.get("id") if isinstance(inst, dict) and isinstance(inst.get("id"), int) else None,
        repo.get("id") if isinstance(repo, dict) and isinstance(repo.get("id"), int) else None,
    )


class HookLog:
    """All Apps' delivery attempts, and where each App's webhook currently points."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(FIRST_DELIVERY_ID)
        self._deliveries: dict[int, HookDelivery] = {}
        self._urls: dict[int, str] = {}

    def set_url(self, app_id: int, url: str) -> None:
        """The App's webhook URL: redeliveries go there (GitHub uses the current config)."""
        with self._lock:
            self._urls[app_id] = url

    def url(self, app_id: int) -> str | None:
        with self._lock:
            return self._urls.get(app_id)

    def add(
        self,
        *,
        app_id: int,
        guid: str,
        event: str,
        url: str,
        body: bytes,
        request_headers: dict[str, str],
        status_code: int,
        failure: str | None = None,
        redelivery: bool = False,
        duration: float = 0.0,
        delivered_at: datetime | None = None,
        response_headers: dict[str, str] | None = None,
        response_body: str | None = None,
    ) -> HookDelivery:
        """Record one attempt; `failure` is the text for a connection failure (status 0)."""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        action, installation_id, repository_id = _ids(payload)
        with self._lock:
            record = HookDelivery(
                id=next(self._ids),
                guid=guid,
                app_id=app_id,
                event=event,
                action=action,
                installation_id=installation_id,
                repository_id=repository_id,
                url=url,
                body=body,
                request_headers=dict(request_headers),
                delivered_at=delivered_at or datetime.now(UTC).replace(microsecond=0),
                redelivery=redelivery,
                duration=duration,
                status_code=status_code,
                status=status_text(status_code, failure),
                response_headers=dict(response_headers or {}),
                response_body=response_body,
            )
            self._deliveries[record.id] = record
            return record

    def get(self, delivery_id: int) -> HookDelivery | None:
        with self._lock:
            return self._deliveries.get(delivery_id)

    def for_app(self, app_id: int) -> list[HookDelivery]:
        """The App's attempts, newest first (as GitHub lists them)."""
        with self._lock:
            found = [d for d in self._deliveries.values() if d.app_id == app_id]
        return sorted(found, key=lambda d: -d.id)

    def attempts(self, guid: str) -> list[HookDelivery]:
        """Every attempt of one event, oldest first."""
        with self._lock:
            found = [d for d in self._deliveries.values() if d.guid == guid]
        return sorted(found, key=lambda d: d.id)

    def backdate(self, delivery_id: int, by: timedelta) -> None:
        """Make an attempt look older (tests of the 3-day window)."""
        with self._lock:
            self._deliveries[delivery_id].delivered_at -= by

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()
            self._urls.clear()

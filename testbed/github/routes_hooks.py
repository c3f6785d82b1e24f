"""The App webhook's deliveries API (App JWT): list, get, redeliver; and recorded sending.

Every delivery the testbed makes goes through `deliver_recorded`, so the log matches what
GitHub would show. `POST .../attempts` answers 202 at once and resends in the background,
as GitHub does: same guid and body, freshly signed with the App's current secret, to the
App's current webhook URL, recorded as a new attempt with `redelivery: true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testbed.github import delivery
from testbed.github.auth import require_app
from testbed.github.errors import GitHubError, not_found
from testbed.github.hooks import REDELIVERY_WINDOW, HookDelivery
from testbed.github.state import App, GitHubState
from testbed.github.web import get_state, identity, int_param, ok

HOOK_TIMEOUT = 10.0  # GitHub: a delivery not answered within 10 s has failed
CURSOR_PREFIX = "v1_"

_background: set[asyncio.Task[None]] = set()


def _raw_headers(headers: httpx.Headers) -> dict[str, str]:
    """Header names as sent (GitHub shows `X-GitHub-Event`, not `x-github-event`)."""
    return {k.decode(): v.decode() for k, v in headers.raw}


async def deliver_recorded(
    state: GitHubState,
    app: App,
    client: httpx.AsyncClient,
    url: str,
    event: str,
    payload: Any,
    delivery_id: str | None = None,
    *,
    redelivery: bool = False,
) -> httpx.Response:
    """Deliver like `delivery.deliver` and record the attempt in the App's delivery log.

    The URL becomes the App's webhook URL. A connection failure or timeout is recorded
    (status code 0) and re-raised.
    """
    body = delivery.encode_payload(payload)
    guid = delivery_id or str(uuid.uuid4())
    if not redelivery:
        state.hooks.set_url(app.id, url)
    record: dict[str, Any] = {
        "app_id": app.id,
        "guid": guid,
        "event": event,
        "url": url,
        "body": body,
        "redelivery": redelivery,
    }
    started = time.monotonic()
    try:
        response = await delivery.deliver(
            client, url, event, body, app.webhook_secret, guid, target_id=app.id
        )
    except httpx.TransportError as exc:
        timed_out = isinstance(exc, httpx.TimeoutException)
        state.hooks.add(
            **record,
            request_headers=_raw_headers(exc.request.headers),
            status_code=0,
            failure="timed out" if timed_out else "failed to connect to host",
            duration=time.monotonic() - started,
        )
        raise
    state.hooks.add(
        **record,
        request_headers=_raw_headers(response.request.headers),
        status_code=response.status_code,
        duration=time.monotonic() - started,
        response_headers=_raw_headers(response.headers),
        response_body=response.text,
    )
    return response


async def redeliver(state: GitHubState, app: App, original: HookDelivery) -> None:
    """Resend a stored delivery; the outcome is recorded, never raised."""
    url = state.hooks.url(app.id) or original.url
    async with httpx.AsyncClient(timeout=HOOK_TIMEOUT) as client:
        with contextlib.suppress(httpx.TransportError):  # recorded as a failed attempt
            await deliver_recorded(
                state,
                app,
                client,
                url,
                original.event,
                original.body,
                original.guid,
                redelivery=True,
            )


# App (JWT) ----------------------------------------------------------------------------


def _own(request: Request) -> tuple[GitHubState, App, HookDelivery]:
    state = get_state(request)
    app = require_app(identity(request))
    found = state.hooks.get(request.path_params["delivery_id"])
    if found is None or found.app_id != app.id:
        raise not_found()
    return state, app, found


def _cursor(request: Request) -> int | None:
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    value = raw.removeprefix(CURSOR_PREFIX)
    if not value.isdigit():
        raise GitHubError(400, "Invalid cursor")
    return int(value)


async def list_deliveries(request: Request) -> Response:
    """Newest first; `cursor` pagination with a `Link: <…?cursor=…>; rel="next"` header."""
    state = get_state(request)
    app = require_app(identity(request))
    per_page = int_param(request, "per_page", 30, high=100)
    before = _cursor(request)
    items = [d for d in state.hooks.for_app(app.id) if before is None or d.id < before]
    page = items[:per_page]
    headers: dict[str, str] = {}
    if len(items) > per_page:
        cursor = f"{CURSOR_PREFIX}{page[-1].id}"
        nxt = request.url.include_query_params(per_page=per_page, cursor=cursor)
        headers["link"] = f'<{nxt}>; rel="next"'
    return ok([d.item() for d in page], headers=headers)


async def get_delivery(request: Request) -> Response:
    _state, _app, found = _own(request)
    return ok(found.full())


async def redeliver_attempt(request: Request) -> Response:
    state, app, found = _own(request)
    if datetime.now(UTC) - found.delivered_at > REDELIVERY_WINDOW:
        raise GitHubError(
            422,
            "Validation Failed",
            errors=[
                {
                    "resource": "HookDelivery",
                    "code": "custom",
                    "field": "delivered_at",
                    "message": "Deliveries older than 3 days cannot be redelivered",
                }
            ],
        )
    task = asyncio.get_running_loop().create_task(redeliver(state, app, found))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return ok({}, 202)


routes = [
    Route("/app/hook/deliveries", list_deliveries, methods=["GET"]),
    Route("/app/hook/deliveries/{delivery_id:int}", get_delivery, methods=["GET"]),
    Route("/app/hook/deliveries/{delivery_id:int}/attempts", redeliver_attempt, methods=["POST"]),
]

"""ASGI middleware: authenticate once, inject faults, add GitHub's headers, log requests.

Also does what GitHub does for conditional GETs: JSON 200s carry an `ETag` plus
`Cache-Control: private, max-age=60` and `Vary: Accept, Authorization, ...`, and a matching
`If-None-Match` gets a bodiless 304 that does not count against the rate limit (githubkit's
HTTP cache relies on this). Pure ASGI, so git's large bodies stream through untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from testbed.github.auth import Identity, authenticate
from testbed.github.errors import GitHubError
from testbed.github.faults import Fault
from testbed.github.state import GitHubState, RequestRecord
from testbed.github.web import IDENTITY_KEY

CONTROL_PREFIX = "/_testbed"
CACHE_CONTROL = "private, max-age=60, s-maxage=60"
VARY = "Accept, Authorization, Cookie, X-GitHub-OTP"


def request_id() -> str:
    """Shaped like GitHub's `x-github-request-id` (e.g. `C0DE:1A2B:3C4D5E:6F7A8B:65A0B0C0`)."""
    return ":".join(secrets.token_hex(n).upper() for n in (2, 2, 3, 3, 4))


def fault_messages(fault: Fault) -> tuple[Message, Message]:
    assert fault.status is not None
    body, content_type = fault.render_body()
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in fault.headers.items()]
    start: Message = {"type": "http.response.start", "status": fault.status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class GitHubMiddleware:
    def __init__(self, app: ASGIApp, state: GitHubState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        state = self.state
        method: str = scope["method"]
        path: str = scope["path"]
        request_headers = Headers(scope=scope)
        started, t0 = time.time(), time.monotonic()
        who: Identity | GitHubError | None
        try:
            who = authenticate(state, request_headers.get("authorization"))
        except GitHubError as exc:
            who = exc
        scope[IDENTITY_KEY] = who
        if isinstance(who, Identity):
            auth_label = rate_key = who.label
        else:
            auth_label = "invalid" if isinstance(who, GitHubError) else "anonymous"
            rate_key = "anonymous"
        status_seen = 500
        req_id = request_id()
        held: Message | None = None
        chunks: list[bytes] = []
        logged = False

        def log_once() -> None:
            # Logged as the response starts, so a client that has its answer (or sees the
            # effect it caused) can count on the request being in the log already.
            nonlocal logged
            if logged:
                return
            logged = True
            state.log_request(
                RequestRecord(
                    method=method,
                    path=path,
                    query=scope.get("query_string", b"").decode("latin-1"),
                    status=status_seen,
                    started=started,
                    duration=time.monotonic() - t0,
                    auth=auth_label,
                )
            )

        def decorate(message: Message, *, count: bool) -> None:
            headers = MutableHeaders(scope=message)
            window = state.rate_hit(rate_key) if count else state.rate_peek(rate_key)
            defaults = {
                "x-ratelimit-limit": str(window.limit),
                "x-ratelimit-remaining": str(max(0, window.limit - window.used)),
                "x-ratelimit-reset": str(window.reset),
                "x-ratelimit-used": str(window.used),
                "x-ratelimit-resource": "core",
                "x-github-request-id": req_id,
                "x-github-media-type": "github.v3; format=json",
                "x-github-api-version-selected": "2022-11-28",
            }
            for key, value in defaults.items():
                if key not in headers:
                    headers[key] = value

        async def send_wrapper(message: Message) -> None:
            nonlocal status_seen, held
            if message["type"] == "http.response.start":
                status_seen = message["status"]
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                if (
                    method in ("GET", "HEAD")
                    and status_seen == 200
                    and content_type.startswith("application/json")
                ):
                    held = message  # wait for the body to compute the ETag
                    return
                decorate(message, count=True)
                log_once()
                await send(message)
                return
            if message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                headers = MutableHeaders(scope=held)
                etag = f'W/"{hashlib.sha256(body).hexdigest()}"'
                headers["etag"] = etag
                headers["cache-control"] = CACHE_CONTROL
                headers["vary"] = VARY
                wanted = request_headers.get("if-none-match", "")
                if etag in [tag.strip() for tag in wanted.split(",")] or wanted.strip() == "*":
                    held["status"] = status_seen = 304
                    del headers["content-length"]
                    del headers["content-type"]
                    body = b""
                decorate(held, count=status_seen != 304)
                log_once()
                await send(held)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        try:
            fault = state.faults.take(method, path)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    start, body_message = fault_messages(fault)
                    await send_wrapper(start)
                    await send_wrapper(body_message)
                    return
            await self.app(scope, receive, send_wrapper)
        finally:
            log_once()

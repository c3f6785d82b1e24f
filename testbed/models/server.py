"""The scripted model server: a Starlette app speaking three provider wire formats.

Stateless replay: the reply is turn k of the first matching rule, where k is the
number of assistant turns already in the request. The only server memory is the
per-turn fault counters and the request log.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from string import Template
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from testbed.models import anthropic, chat, responses
from testbed.models.script import Fault, Script, Turn, script_from_data
from testbed.models.sse import MALFORMED, Event
from testbed.models.wire import (
    ErrorKind,
    Output,
    Seen,
    ToolCallOut,
    WireError,
    invalid,
    new_id,
)


@dataclass(frozen=True)
class Wire:
    """One wire format's functions, so the handler is written once."""

    protocol: str
    credentials: Callable[[Mapping[str, str]], str | None]
    read: Callable[[Mapping[str, Any], Mapping[str, str]], Seen]
    render: Callable[[Output, Seen, Mapping[str, Any]], dict[str, Any]]
    error_body: Callable[[WireError], dict[str, Any]]
    check_passback: Callable[[Seen, int, str], None]
    call_id: Callable[[], str]
    missing_key: str
    overloaded_status: int
    stream: Callable[[dict[str, Any], Mapping[str, Any]], list[Event]]
    stream_error: Callable[[WireError], Event]
    request_id_header: str


WIRES: dict[str, Wire] = {
    "openai-chat": Wire(
        chat.PROTOCOL,
        chat.credentials,
        chat.read,
        chat.render,
        chat.error_body,
        chat.check_passback,
        chat.call_id,
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        503,
        chat.stream,
        chat.stream_error,
        "x-request-id",
    ),
    "openai-responses": Wire(
        responses.PROTOCOL,
        responses.credentials,
        responses.read,
        responses.render,
        responses.error_body,
        responses.check_passback,
        responses.call_id,
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        503,
        lambda reply, body: responses.stream(reply),
        responses.stream_error,
        "x-request-id",
    ),
    "anthropic": Wire(
        anthropic.PROTOCOL,
        anthropic.credentials,
        anthropic.read,
        anthropic.render,
        anthropic.error_body,
        anthropic.check_passback,
        anthropic.call_id,
        "x-api-key header is required",
        529,
        lambda reply, body: anthropic.stream(reply),
        anthropic.stream_error,
        "request-id",
    ),
}
_STREAM_FAULTS = frozenset({"stream_error", "stream_cut", "malformed"})

_FAULT_DEFAULTS: dict[str, tuple[ErrorKind, int, str]] = {
    "rate_limit": (
        "rate_limit",
        429,
        "Rate limit reached for requests. Please try again later.",
    ),
    "overloaded": ("overloaded", 0, "Overloaded"),
    "server_error": (
        "server_error",
        500,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "insufficient_quota": (
        "insufficient_quota",
        429,
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "payment_required": (
        "payment_required",
        402,
        "Insufficient Balance: your credit balance is too low to access the API.",
    ),
}
_STATUS_KINDS: dict[int, ErrorKind] = {
    400: "invalid_request",
    401: "authentication",
    402: "payment_required",
    403: "authentication",
    404: "not_found",
    422: "invalid_request",
    429: "rate_limit",
    503: "overloaded",
    529: "overloaded",
}


@dataclass
class RecordedRequest:
    protocol: str
    path: str
    headers: dict[str, str]
    body: Any
    model: str | None = None
    rule: str | None = None
    turn: int | None = None
    """0-based turn index that was asked for."""
    status: int = 0
    error: str | None = None
    stream: bool = False
    at: float = field(default_factory=time.time)


@dataclass
class Reply:
    """A rendered turn, and the stream fault (if any) to apply while sending it."""

    body: dict[str, Any]
    rendered: dict[str, Any]
    fault: Fault | None


class ModelServer:
    """Holds the script, fault counters and request log; `.app` is the ASGI app."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._hits: Counter[tuple[int, int]] = Counter()
        self.closing = threading.Event()
        """Set on shutdown so scripted hangs end promptly."""
        self.app = Starlette(
            routes=self._routes(),
            exception_handlers={404: self._unknown, 405: self._unknown},
        )

    @property
    def script(self) -> Script:
        return self._script

    def set_script(self, script: Script) -> None:
        """Swap the script and forget fault counters (the request log is kept)."""
        with self._lock:
            self._script = script
            self._hits.clear()

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._hits.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, protocol: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.protocol == protocol]

    def _routes(self) -> list[Route]:
        def endpoint(wire: Wire) -> Callable[[Request], Awaitable[Response]]:
            async def handle(request: Request) -> Response:
                return await self._handle(wire, request)

            return handle

        chat_ep = endpoint(WIRES["openai-chat"])
        responses_ep = endpoint(WIRES["openai-responses"])
        return [
            Route("/v1/chat/completions", chat_ep, methods=["POST"]),
            Route("/chat/completions", chat_ep, methods=["POST"]),
            Route("/v1/responses", responses_ep, methods=["POST"]),
            Route("/responses", responses_ep, methods=["POST"]),
            Route("/v1/messages", endpoint(WIRES["anthropic"]), methods=["POST"]),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/models", self._models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self._model, methods=["GET"]),
            Route("/_testbed/health", self._health, methods=["GET"]),
            Route("/_testbed/requests", self._list_requests, methods=["GET"]),
            Route("/_testbed/reset", self._reset, methods=["POST"]),
            Route("/_testbed/script", self._put_script, methods=["PUT"]),
        ]

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "rules": len(self._script.rules)})

    async def _list_requests(self, request: Request) -> Response:
        return JSONResponse([asdict(r) for r in self.requests])

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def _put_script(self, request: Request) -> Response:
        try:
            self.set_script(script_from_data(json.loads(await request.body())))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    def _record(self, protocol: str, request: Request) -> RecordedRequest:
        record = RecordedRequest(protocol, request.url.path, dict(request.headers), None)
        with self._lock:
            self._requests.append(record)
        return record

    def _error(
        self, wire: Wire, record: RecordedRequest, error: WireError, request_id: str
    ) -> Response:
        record.status, record.error = error.status, error.message
        body = wire.error_body(error)
        if "request_id" in body:
            body["request_id"] = request_id
        headers = {**error.headers, wire.request_id_header: request_id}
        return JSONResponse(body, status_code=error.status, headers=headers)

    async def _handle(self, wire: Wire, request: Request) -> Response:
        record = self._record(wire.protocol, request)
        request_id = new_id("req_")
        try:
            reply = await self._reply(wire, request, record)
        except WireError as error:
            return self._error(wire, record, error, request_id)
        record.status = 200
        headers = {wire.request_id_header: request_id}
        fault = reply.fault
        if record.stream:
            events = wire.stream(reply.rendered, reply.body)
            return StreamingResponse(
                self._send(wire, events, fault),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        if fault is not None and fault.kind == "stream_error":
            return self._error(wire, record, _stream_failure(fault, wire), request_id)
        if fault is not None:
            text = json.dumps(reply.rendered)
            return Response(text[: len(text) // 2], media_type="application/json", headers=headers)
        return JSONResponse(reply.rendered, headers=headers)

    async def _send(
        self, wire: Wire, events: list[Event], fault: Fault | None
    ) -> AsyncIterator[bytes]:
        """The events in order; a stream fault breaks off after `fault.after` of them."""
        for number, event in enumerate(events):
            if fault is not None and number == fault.after:
                if fault.kind == "stream_error":
                    yield wire.stream_error(_stream_failure(fault, wire)).encode()
                elif fault.kind == "malformed":
                    yield MALFORMED
                return
            yield event.encode()

    async def _read_body(self, request: Request, record: RecordedRequest) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise invalid("testbed: the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise invalid("testbed: the request body must be a JSON object")
        record.body = body
        record.model = body.get("model") if isinstance(body.get("model"), str) else None
        record.stream = body.get("stream") is True
        return body

    async def _reply(self, wire: Wire, request: Request, record: RecordedRequest) -> Reply:
        body = await self._read_body(request, record)
        self._check_key(wire, request.headers)
        seen = wire.read(body, request.headers)
        script = self._script
        index = script.find(seen)
        if index is None:
            raise invalid(
                f"testbed: no script rule matches this {wire.protocol} conversation "
                f"(model {seen.model!r}); first user message: {_short(seen.first_user)!r}"
            )
        rule = script.rules[index]
        k = seen.turn_index
        record.rule, record.turn = script.label(index), k
        if k >= len(rule.turns):
            raise invalid(
                f"testbed: script rule {script.label(index)!r} has {len(rule.turns)} turn(s) "
                f"but the conversation already holds {k} assistant turn(s); "
                f"no turn {k + 1} to reply with"
            )
        for earlier in range(k):
            reasoning = rule.turns[earlier].reasoning
            if reasoning is not None:
                wire.check_passback(seen, earlier, reasoning)
        turn = rule.turns[k]
        fault = self._fault_for(index, k, turn)
        if fault is not None and fault.kind not in _STREAM_FAULTS:
            await self._apply(wire, fault)
            fault = None
        if turn.latency:
            await self._sleep(turn.latency)
        rendered = wire.render(build_output(turn, seen, body, wire.call_id), seen, body)
        return Reply(body, rendered, fault)

    async def _count_tokens(self, request: Request) -> Response:
        wire = WIRES["anthropic"]
        record = self._record(wire.protocol, request)
        request_id = new_id("req_")
        try:
            body = await self._read_body(request, record)
            self._check_key(wire, request.headers)
            counted = anthropic.count_tokens(body, request.headers)
        except WireError as error:
            return self._error(wire, record, error, request_id)
        record.status = 200
        return JSONResponse(counted, headers={wire.request_id_header: request_id})

    def _listing_wire(self, request: Request) -> Wire:
        """`/v1/models` is both providers' path: the Anthropic headers decide."""
        headers = request.headers
        anthropic_style = "anthropic-version" in headers or "x-api-key" in headers
        return WIRES["anthropic" if anthropic_style else "openai-chat"]

    async def _models(self, request: Request) -> Response:
        wire = self._listing_wire(request)
        record = self._record(wire.protocol, request)
        request_id = new_id("req_")
        try:
            self._check_key(wire, request.headers)
        except WireError as error:
            return self._error(wire, record, error, request_id)
        record.status = 200
        names = self._script.models
        entries = [_model_entry(wire, name) for name in names]
        if wire.protocol == "anthropic":
            listing: dict[str, Any] = {
                "data": entries,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            listing = {"object": "list", "data": entries}
        return JSONResponse(listing, headers={wire.request_id_header: request_id})

    async def _model(self, request: Request) -> Response:
        wire = self._listing_wire(request)
        record = self._record(wire.protocol, request)
        request_id = new_id("req_")
        name = str(request.path_params["model_id"])
        try:
            self._check_key(wire, request.headers)
            if name not in self._script.models:
                raise WireError(404, "not_found", f"model: {name}")
        except WireError as error:
            return self._error(wire, record, error, request_id)
        record.status = 200
        return JSONResponse(_model_entry(wire, name), headers={wire.request_id_header: request_id})

    async def _unknown(self, request: Request, exc: Exception) -> Response:
        """Unknown paths and methods answer in the provider's error shape, not HTML."""
        wire = self._listing_wire(request)
        record = self._record("unknown", request)
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            message = f"Invalid URL ({request.method} {request.url.path})"
        if wire.protocol == "anthropic":
            message = "Not Found" if status == 404 else message
        error = WireError(status, "not_found" if status == 404 else "invalid_request", message)
        response = self._error(wire, record, error, new_id("req_"))
        response.headers["x-request-id"] = response.headers.get(wire.request_id_header, "")
        return response

    def _check_key(self, wire: Wire, headers: Mapping[str, str]) -> None:
        key = wire.credentials(headers)
        if key is None:
            raise WireError(401, "authentication", wire.missing_key)
        expected = self._script.api_key
        if expected is not None and key != expected:
            raise WireError(401, "authentication", "Incorrect API key provided.")

    def _fault_for(self, rule: int, turn_index: int, turn: Turn) -> Fault | None:
        """Faults apply in order, each to its next `times` requests of this turn."""
        if not turn.faults:
            return None
        with self._lock:
            self._hits[(rule, turn_index)] += 1
            hit = self._hits[(rule, turn_index)]
        covered = 0
        for fault in turn.faults:
            if fault.times is None or hit <= covered + fault.times:
                return fault
            covered += fault.times
        return None

    async def _apply(self, wire: Wire, fault: Fault) -> None:
        if fault.kind == "hang":
            await self._sleep(fault.seconds)
            return
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault.kind == "http":
            status = fault.status or 500
            kind = _STATUS_KINDS.get(status, "server_error")
            message = f"testbed: scripted HTTP {status}"
        else:
            kind, status, message = _FAULT_DEFAULTS[fault.kind]
            status = fault.status or status or wire.overloaded_status
        raise WireError(
            status, kind, fault.message or message, headers, type=fault.type, code=fault.code
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the server is shutting down."""
        deadline = time.monotonic() + seconds
        while not self.closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))


def _stream_failure(fault: Fault, wire: Wire) -> WireError:
    """The provider error a `stream_error` fault sends (an overload unless scripted)."""
    kind: ErrorKind = "overloaded"
    return WireError(
        fault.status or wire.overloaded_status,
        kind,
        fault.message or "Overloaded",
        type=fault.type,
        code=fault.code,
    )


def _model_entry(wire: Wire, name: str) -> dict[str, Any]:
    if wire.protocol == "anthropic":
        return {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": "2026-01-01T00:00:00Z",
        }
    return {"id": name, "object": "model", "created": 1767225600, "owned_by": "testbed"}


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_output(
    turn: Turn, seen: Seen, body: Mapping[str, Any], make_id: Callable[[], str]
) -> Output:
    """Template, assign ids and settle usage (estimated as chars/4 when not scripted)."""
    values = {
        "first_user": seen.first_user,
        "last_user": seen.last_user,
        "last_tool_result": seen.last_tool_result,
        "model": seen.model,
        "turn": str(seen.turn_index + 1),
    }

    def sub(text: str) -> str:
        return Template(text).safe_substitute(values) if turn.template else text

    def sub_value(value: Any) -> Any:
        if isinstance(value, str):
            return sub(value)
        if isinstance(value, list):
            return [sub_value(v) for v in value]
        if isinstance(value, dict):
            return {k: sub_value(v) for k, v in value.items()}
        return value

    calls = [
        ToolCallOut(
            id=call.id or make_id(),
            name=call.name,
            arguments=(
                sub(call.raw_arguments)
                if call.raw_arguments is not None
                else json.dumps(sub_value(call.arguments or {}))
            ),
        )
        for call in turn.tool_calls
    ]
    text = sub(turn.text)
    usage = turn.usage
    reasoning_tokens = usage.reasoning
    if reasoning_tokens is None:
        reasoning_tokens = len(turn.reasoning) // 4 + 1 if turn.reasoning else 0
    output = usage.output
    if output is None:
        chars = len(text) + sum(len(c.name) + len(c.arguments) for c in calls)
        output = chars // 4 + 1 + reasoning_tokens
    uncached = usage.input
    if uncached is None:
        estimate = len(json.dumps(body)) // 4
        uncached = max(0, estimate - usage.cached - usage.cache_write)
    return Output(
        model=turn.model or seen.model,
        text=text,
        calls=calls,
        reasoning=turn.reasoning,
        stop=turn.stop or ("tool_use" if calls else "end_turn"),
        input=uncached,
        cached=usage.cached,
        cache_write=usage.cache_write,
        output=output,
        reasoning_tokens=reasoning_tokens,
    )

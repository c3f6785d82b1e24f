"""The model gateway: the only way a story's CLI reaches a model.

The CLI runs in a sandbox whose one loopback port is bridged to this gateway's unix
socket; it is given a dummy key and the gateway's URL. For every request the gateway:

- accepts only the configured model's protocol paths (Anthropic `/v1/messages`,
  `/v1/messages/count_tokens`, `/v1/models`; Responses `/v1/responses`; Chat
  `/v1/chat/completions`; both OpenAI ones `/v1/models`), refusing other paths, other
  hosts in absolute-form request lines and CONNECT with a JSON error;
- drops whatever credential the client sent and adds the real one (API key as
  `x-api-key` or `Authorization: Bearer`, or a Claude subscription token as
  `Authorization: Bearer` with the `oauth-2025-04-20` beta);
- streams the reply back frame by frame while metering its usage into `Usage`, priced
  as `runner.agent.turn_pricer` does (unknown price stays unknown);
- keeps the attempt's tally and, once a budget is exceeded, refuses further requests and
  reports `stop_reason` ("budget: …") for the runner to stop the CLI.

It never logs or echoes the real secret: upstream error text is redacted before it is
passed on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.llm.config import ModelConfig
from app.llm.prices import PriceTable, load_prices
from app.llm.types import Protocol, Usage
from runner.gateway_http import Exchange, HttpRequest, serve_connection
from runner.gateway_meter import Malformed, Meter, SseFrames, parse_frame, stream_error_frame

log = logging.getLogger(__name__)

OAUTH_BETA = "oauth-2025-04-20"
"""The `anthropic-beta` entry Claude Code sends with a subscription (OAuth) token."""

MODEL_PATHS: dict[Protocol, frozenset[str]] = {
    "anthropic": frozenset({"/v1/messages"}),
    "openai-responses": frozenset({"/v1/responses"}),
    "openai-chat": frozenset({"/v1/chat/completions"}),
}
"""Paths whose replies are model calls: metered, counted as rounds, budgeted."""
OTHER_PATHS: dict[Protocol, frozenset[str]] = {
    "anthropic": frozenset({"/v1/messages/count_tokens"}),
    "openai-responses": frozenset(),
    "openai-chat": frozenset(),
}
_MODEL_ID = re.compile(r"^/v1/models/[A-Za-z0-9._:@-]{1,200}$")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "host",
    }
)
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie"}
)
_DROPPED_REPLY_HEADERS = frozenset({"set-cookie", "alt-svc", "date", "server"})
MAX_ERROR_BYTES = 1024 * 1024
MAX_COPY_BYTES = 64 * 1024 * 1024
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Upstream:
    """The one endpoint an attempt may reach, and the secret the gateway adds to it.

    `base_url` is the provider's origin, with or without a trailing `/v1` (as in
    `ModelConfig.base_url`); client paths (`/v1/…`) are appended to it.
    """

    protocol: Protocol
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    oauth_token: str | None = field(default=None, repr=False)
    """Anthropic only: a Claude subscription token (`claude setup-token`)."""
    model: str | None = None
    """If set, requests naming another model are refused."""
    price_key: str | None = None
    """Price table entry; default `model`, else the model the reply names."""
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if (self.api_key is None) == (self.oauth_token is None):
            raise ValueError("give exactly one of api_key and oauth_token")
        if self.oauth_token is not None and self.protocol != "anthropic":
            raise ValueError("a subscription token only works with the anthropic protocol")

    @classmethod
    def for_model(cls, config: ModelConfig, secret: str, *, subscription: bool = False) -> Upstream:
        """The upstream of one configured model: its endpoint, id and price entry."""
        return cls(
            protocol=config.protocol,
            base_url=config.base_url,
            api_key=None if subscription else secret,
            oauth_token=secret if subscription else None,
            model=config.model_id,
            price_key=config.price_key or config.model_id,
            timeout_s=config.request_timeout_s,
        )

    @property
    def secret(self) -> str:
        return self.api_key or self.oauth_token or ""

    def url(self, path: str, query: str) -> str:
        base = self.base_url.rstrip("/")
        base = base[:-3] if base.endswith("/v1") else base
        return base + path + (f"?{query}" if query else "")

    def credential_headers(self, client_beta: str | None) -> dict[str, str]:
        if self.oauth_token is not None:
            betas = [b.strip() for b in (client_beta or "").split(",") if b.strip()]
            if OAUTH_BETA not in betas:
                betas.append(OAUTH_BETA)
            return {
                "authorization": f"Bearer {self.oauth_token}",
                "anthropic-beta": ",".join(betas),
            }
        if self.protocol == "anthropic":
            return {"x-api-key": self.secret}
        return {"authorization": f"Bearer {self.secret}"}


@dataclass(frozen=True)
class Budget:
    """Limits of one attempt; None means no limit."""

    max_cost_usd: Decimal | None = None
    max_rounds: int | None = None
    """Model calls the upstream answered."""
    max_tokens: int | None = None
    """Prompt plus output tokens over the attempt."""


@dataclass(frozen=True)
class Tally:
    """What an attempt has used so far, as the runner reads it."""

    calls: int = 0
    """Model calls the upstream answered with a complete 2xx reply (the rounds)."""
    errors: int = 0
    """Model calls that failed: upstream error status, broken or malformed reply."""
    refused: int = 0
    """Requests the gateway refused (paths, hosts, budget …)."""
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = Decimal(0)
    """None (unknown) once any reply could not be priced or metered; never a made-up 0."""
    known_cost_usd: Decimal = Decimal(0)
    """The priced part: what budgets are checked against."""
    unpriced: int = 0
    """Replies whose usage was missing or whose model has no price."""

    @property
    def tokens(self) -> int:
        return self.usage.prompt + self.usage.output


class _Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


_ANTHROPIC_TYPES = {
    "not_found": "not_found_error",
    "forbidden": "permission_error",
    "method": "invalid_request_error",
    "invalid": "invalid_request_error",
    "too_large": "request_too_large",
    "budget": "billing_error",
    "busy": "rate_limit_error",
    "upstream": "api_error",
}
_OPENAI_TYPES = {
    "not_found": ("invalid_request_error", "gateway_refused"),
    "forbidden": ("invalid_request_error", "gateway_refused"),
    "method": ("invalid_request_error", "gateway_refused"),
    "invalid": ("invalid_request_error", None),
    "too_large": ("invalid_request_error", "request_too_large"),
    "budget": ("insufficient_quota", "budget_exceeded"),
    "busy": ("requests", "rate_limit_exceeded"),
    "upstream": ("server_error", None),
}


def error_body(protocol: Protocol, kind: str, message: str) -> dict[str, Any]:
    """A gateway error in the provider's own shape, so clients report it as an API error."""
    if protocol == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES[kind], "message": message}}
    kind_type, code = _OPENAI_TYPES[kind]
    return {"error": {"message": message, "type": kind_type, "param": None, "code": code}}


class Gateway:
    """One attempt's gateway. `await start_tcp()` / `await start_unix(path)`, then
    read `tally` and `stop_reason`; `await aclose()` when the attempt ends."""

    def __init__(
        self,
        upstream: Upstream,
        prices: PriceTable,
        budget: Budget | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_stop: Callable[[str], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.prices = prices
        self.budget = budget or Budget()
        self._tally = Tally()
        self.stop_reason: str | None = None
        self.last_failure: str | None = None
        """The latest failed model call or refusal, redacted: why a CLI may have given up."""
        self.stopped = asyncio.Event()
        self._on_stop = on_stop
        # httpx's transport without the client layers (auth, redirects, cookies, proxies
        # from the environment): none apply to one fixed upstream, and each costs time.
        self._transport = transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            trust_env=False,
        )
        self._timeout = httpx.Timeout(upstream.timeout_s, connect=30.0).as_dict()
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._secret_pattern = re.compile(re.escape(upstream.secret)) if upstream.secret else None

    # --- lifecycle ---------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on TCP (tests, benchmarks); returns the base URL to give a client."""
        server = await asyncio.start_server(self._connection, host, port)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        return f"http://{host}:{bound[1]}"

    async def start_unix(self, path: str | Path) -> None:
        """Listen on a unix socket: what the sandbox's loopback port is bridged to."""
        server = await asyncio.start_unix_server(self._connection, str(path))
        self._servers.append(server)

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._transport.aclose()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def tally(self) -> Tally:
        return self._tally

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await serve_connection(reader, writer, self._respond, self._bad_request)
        finally:
            if task is not None:
                self._connections.discard(task)

    def _bad_request(self, status: int, reason: str) -> dict[str, Any]:
        kind = "too_large" if status == 413 else "invalid"
        return error_body(self.upstream.protocol, kind, f"baro gateway: {reason}")

    # --- one request -------------------------------------------------------------------

    def _route(self, request: HttpRequest) -> tuple[str, str]:
        """The path and query to forward, or a _Refusal saying why not."""
        if request.method == "CONNECT":
            raise _Refusal(405, "method", "baro gateway: CONNECT is refused; this is no proxy")
        target = request.target
        if "://" in target:
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or parts.hostname not in _LOOPBACK:
                raise _Refusal(
                    403,
                    "forbidden",
                    f"baro gateway: requests to {parts.hostname or target!r} are refused; "
                    "only the configured model endpoint is reachable",
                )
            path, query = parts.path or "/", parts.query
        else:
            path, _, query = target.partition("?")
        protocol = self.upstream.protocol
        if path in MODEL_PATHS[protocol] or path in OTHER_PATHS[protocol]:
            allowed_method = "POST"
        elif path == "/v1/models" or _MODEL_ID.match(path):
            allowed_method = "GET"
        else:
            raise _Refusal(
                404,
                "not_found",
                f"baro gateway: {request.method} {path} is not an allowed {protocol} path "
                f"(allowed: {', '.join(self.allowed_paths())})",
            )
        if request.method != allowed_method:
            raise _Refusal(405, "method", f"baro gateway: {request.method} {path} is not allowed")
        return path, query

    def allowed_paths(self) -> list[str]:
        protocol = self.upstream.protocol
        return sorted(MODEL_PATHS[protocol] | OTHER_PATHS[protocol] | {"/v1/models"})

    async def _respond(self, request: HttpRequest, out: Exchange) -> None:
        protocol = self.upstream.protocol
        try:
            path, query = self._route(request)
            if self.stop_reason is not None:
                raise _Refusal(402, "budget", f"baro gateway: attempt stopped, {self.stop_reason}")
            model_call = path in MODEL_PATHS[protocol]
            if model_call:
                self._check_rounds()
            body = self._prepare_body(request.body, path) if request.method == "POST" else b""
        except _Refusal as refusal:
            self._tally = _replace(self._tally, refused=self._tally.refused + 1)
            if request.method != "HEAD":  # Claude Code's reachability probe is no failure
                self.last_failure = f"refused {request.method} {request.target[:200]}: {refusal}"
            log.info("gateway refused %s %s: %s", request.method, request.target[:200], refusal)
            payload = error_body(protocol, refusal.kind, refusal.message)
            await out.json(
                refusal.status,
                payload,
                close=request.method == "CONNECT",
                head=request.method == "HEAD",
            )
            return
        if not model_call:
            await self._forward(out, request, path, query, body, model_call)
            return
        self._in_flight += 1
        try:
            await self._forward(out, request, path, query, body, model_call)
        finally:
            self._in_flight -= 1

    def _check_rounds(self) -> None:
        """The rounds budget counts answered calls; calls still in flight hold their
        round, so parallel requests cannot overshoot it (they are told to retry)."""
        limit = self.budget.max_rounds
        if limit is None:
            return
        if self._tally.calls >= limit:
            self._stop(f"budget: max_rounds {limit} reached ({self._tally.calls} model calls)")
            raise _Refusal(402, "budget", f"baro gateway: attempt stopped, {self.stop_reason}")
        if self._tally.calls + self._in_flight >= limit:
            raise _Refusal(
                429,
                "busy",
                f"baro gateway: the last of {limit} model calls is in flight; retry shortly",
            )

    def _prepare_body(self, raw: bytes, path: str) -> bytes:
        """Check the model; on Chat streams ask for the final usage chunk (metering)."""
        needs_model = self.upstream.model is not None
        chat_stream = self.upstream.protocol == "openai-chat" and b'"stream"' in raw
        if not (needs_model or chat_stream):
            return raw
        try:
            data = json.loads(raw)
        except ValueError:
            raise _Refusal(400, "invalid", "baro gateway: the request body is not JSON") from None
        if not isinstance(data, dict):
            raise _Refusal(400, "invalid", "baro gateway: the request body is not a JSON object")
        wanted = self.upstream.model
        if wanted is not None and data.get("model") != wanted:
            raise _Refusal(
                400,
                "invalid",
                f"baro gateway: this attempt may only use model {wanted!r}, "
                f"not {str(data.get('model'))[:100]!r}",
            )
        if chat_stream and data.get("stream") is True:
            options = data.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            if not options.get("include_usage"):
                options["include_usage"] = True
                data["stream_options"] = options
                return json.dumps(data).encode()
        return raw

    def _upstream_headers(self, request: HttpRequest) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in request.headers:
            if name in _HOP_BY_HOP or name in _CREDENTIAL_HEADERS or name == "accept-encoding":
                continue
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        beta = headers.pop("anthropic-beta", None)
        if beta is not None:
            headers["anthropic-beta"] = beta
        headers.update(self.upstream.credential_headers(beta))
        headers["accept-encoding"] = "gzip"
        return headers

    def redact(self, text: str) -> str:
        return self._secret_pattern.sub(REDACTED, text) if self._secret_pattern else text

    def _reply_headers(self, response: httpx.Response) -> list[tuple[str, str]]:
        return [
            (name, self.redact(value))
            for name, value in response.headers.items()
            if name not in _HOP_BY_HOP and name not in _DROPPED_REPLY_HEADERS
        ]

    async def _forward(
        self,
        out: Exchange,
        request: HttpRequest,
        path: str,
        query: str,
        body: bytes,
        model_call: bool,
    ) -> None:
        protocol = self.upstream.protocol
        requested_at = datetime.now(UTC)
        started = time.monotonic()
        upstream_request = httpx.Request(
            request.method,
            self.upstream.url(path, query),
            headers=self._upstream_headers(request),
            content=body if request.method == "POST" else None,
            extensions={"timeout": self._timeout},
        )
        try:
            response = await self._transport.handle_async_request(upstream_request)
        except httpx.HTTPError as exc:
            message = self.redact(f"baro gateway: the model endpoint failed: {type(exc).__name__}")
            if model_call:
                self._tally = _replace(self._tally, errors=self._tally.errors + 1)
            self.last_failure = message
            log.warning("gateway: upstream %s failed: %s", path, type(exc).__name__)
            await out.json(502, error_body(protocol, "upstream", message))
            return
        response.request = upstream_request
        meter = Meter(protocol)
        failure: str | None = "the client went away"
        try:
            if response.status_code >= 400:
                failure = None
                await self._relay_error(out, response, model_call)
                return
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            headers = self._reply_headers(response)
            length = response.headers.get("content-length")
            if not streamed and length and not response.headers.get("content-encoding"):
                headers.append(("content-length", length))  # unchanged bytes: keep it
            out.start(response.status_code, headers)  # sent with the first bytes of the body
            relay = self._relay_stream if streamed else self._relay_body
            failure = await relay(out, response, meter)
            out.end()
            await out.flush()
        finally:
            await response.aclose()
            if model_call and response.status_code < 400:
                # Also when the client vanished mid-reply: what was used is still billed.
                self._account(meter, failure, requested_at)
        log.info(
            "gateway %s %s -> %s in %.0f ms", request.method, path, response.status_code,
            (time.monotonic() - started) * 1000,
        )  # fmt: skip

    async def _relay_error(self, out: Exchange, response: httpx.Response, model_call: bool) -> None:
        """Upstream errors go to the client with their status and (redacted) body."""
        data = bytearray()
        with contextlib.suppress(httpx.HTTPError):
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_ERROR_BYTES:
                    break
        text = self.redact(bytes(data[:MAX_ERROR_BYTES]).decode("utf-8", "replace"))
        if model_call:
            self._tally = _replace(self._tally, errors=self._tally.errors + 1)
        self.last_failure = f"the model endpoint answered {response.status_code}: {text[:300]}"
        encoded = text.encode()
        headers = [
            (k, v) for k, v in self._reply_headers(response) if k.lower() != "content-length"
        ]
        headers.append(("content-length", str(len(encoded))))
        out.start(response.status_code, headers)
        out.data(encoded)
        out.end()
        await out.flush()

    async def _relay_stream(
        self, out: Exchange, response: httpx.Response, meter: Meter
    ) -> str | None:
        """Whole SSE frames as they arrive; a broken or malformed stream ends with the
        provider's own mid-stream error event. Returns what went wrong, if anything."""
        frames = SseFrames()
        failure: str | None = None
        try:
            async for chunk in _chunks(response):
                for frame in frames.feed(chunk):
                    event = parse_frame(frame)
                    if event is not None:
                        meter.event(event)
                    out.data(frame)
                await out.flush()
        except Malformed as exc:
            failure = f"malformed stream: {exc}"
        except httpx.HTTPError as exc:
            failure = f"the stream broke off: {type(exc).__name__}"
        if failure is None and not meter.done:
            failure = "the stream ended before its final event"
        if failure is None and meter.error is not None:
            return self.redact(f"error event: {meter.error}")
        if failure is not None:
            message = self.redact(f"baro gateway: upstream {failure}")
            out.data(stream_error_frame(meter.protocol, message))
        return failure

    async def _relay_body(
        self, out: Exchange, response: httpx.Response, meter: Meter
    ) -> str | None:
        """A JSON reply passes through as it arrives; a copy is metered at the end."""
        copy = bytearray()
        try:
            async for chunk in _chunks(response):
                if len(copy) < MAX_COPY_BYTES:
                    copy += chunk
                out.data(chunk)
                await out.flush()
        except httpx.HTTPError as exc:
            return f"the reply broke off: {type(exc).__name__}"
        try:
            meter.body(bytes(copy))
        except Malformed as exc:
            return f"malformed reply: {exc}"
        return None

    # --- accounting --------------------------------------------------------------------

    def _account(self, meter: Meter, failure: str | None, requested_at: datetime) -> None:
        t = self._tally
        price_key = self.upstream.price_key or self.upstream.model or meter.model
        cost: Decimal | None = None
        if meter.usage is not None and price_key:
            cost = self.prices.cost(meter.usage, price_key, requested_at)
        ok = failure is None and meter.error is None
        self._tally = _replace(
            t,
            calls=t.calls + (1 if ok else 0),
            errors=t.errors + (0 if ok else 1),
            usage=t.usage + (meter.usage or Usage()),
            cost_usd=None if cost is None or t.cost_usd is None else t.cost_usd + cost,
            known_cost_usd=t.known_cost_usd + (cost or Decimal(0)),
            unpriced=t.unpriced + (1 if cost is None else 0),
        )
        if not ok:
            self.last_failure = self.redact(failure or meter.error or "")
            log.warning("gateway: model call failed: %s", self.last_failure)
        self._check_spend()

    def _check_spend(self) -> None:
        t, b = self._tally, self.budget
        if b.max_tokens is not None and t.tokens > b.max_tokens:
            self._stop(f"budget: max_tokens {b.max_tokens:,} exceeded ({t.tokens:,} tokens)")
        elif b.max_cost_usd is not None and t.known_cost_usd > b.max_cost_usd:
            self._stop(f"budget: max_cost_usd ${b.max_cost_usd} exceeded (${t.known_cost_usd:.4f})")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.stopped.set()
        log.info("gateway: %s", reason)
        if self._on_stop is not None:
            self._on_stop(reason)


async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in response.aiter_bytes():
        if chunk:
            yield chunk


def _replace(tally: Tally, **changes: Any) -> Tally:
    return dataclasses.replace(tally, **changes)


def main(argv: list[str] | None = None) -> int:
    """`python -m runner.gateway --protocol anthropic --upstream URL [--port N | --unix P]`:
    serve one upstream until interrupted; the secret comes from `--key-env`'s variable."""
    parser = argparse.ArgumentParser(prog="python -m runner.gateway")
    parser.add_argument("--protocol", required=True, choices=sorted(MODEL_PATHS))
    parser.add_argument("--upstream", required=True, help="provider base URL")
    parser.add_argument("--key-env", default="BARO_UPSTREAM_KEY")
    parser.add_argument("--oauth", action="store_true", help="the key is a subscription token")
    parser.add_argument("--model", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix", default=None)
    parser.add_argument("--max-cost-usd", type=Decimal, default=None)
    parser.add_argument("--max-rounds", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    secret = os.environ.get(args.key_env)
    if not secret:
        print(f"error: {args.key_env} is not set", file=sys.stderr)
        return 2
    upstream = Upstream(
        args.protocol,
        args.upstream,
        api_key=None if args.oauth else secret,
        oauth_token=secret if args.oauth else None,
        model=args.model,
    )
    budget = Budget(args.max_cost_usd, args.max_rounds, args.max_tokens)

    async def serve() -> None:
        gateway = Gateway(upstream, load_prices(), budget)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, done.set)
        if args.unix:
            await gateway.start_unix(args.unix)
            print(json.dumps({"unix": args.unix}), flush=True)
        else:
            print(json.dumps({"url": await gateway.start_tcp(port=args.port)}), flush=True)
        await done.wait()
        await gateway.aclose()
        t = gateway.tally
        cost = None if t.cost_usd is None else str(t.cost_usd)
        summary = {"calls": t.calls, "errors": t.errors, "refused": t.refused, "cost_usd": cost}
        print(json.dumps({**summary, "stop_reason": gateway.stop_reason}), flush=True)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

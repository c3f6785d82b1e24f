"""The gateway's HTTP/1.1 server side: h11 on asyncio streams.

Not a framework: the gateway must see the raw request target (an absolute-form line
naming another host, CONNECT) that ASGI servers normalise away, and it writes replies
as it relays them. Bytes are coalesced so a small reply is one socket write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_HEAD_BYTES = 256 * 1024


@dataclass
class HttpRequest:
    method: str
    """Upper case, e.g. `POST`, `CONNECT`."""
    target: str
    """As on the request line: origin-form `/v1/messages?beta=true` or absolute-form."""
    headers: list[tuple[str, str]]
    """Names in lower case, in the order sent."""
    body: bytes


class Exchange:
    """One reply on a connection: h11 events turned into bytes, written when flushed."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self._conn = conn
        self._writer = writer
        self._pending: list[bytes] = []

    def send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            self._pending.append(data)

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.send(h11.Response(status_code=status, headers=headers))

    def data(self, data: bytes) -> None:
        if data:
            self.send(h11.Data(data=data))

    def end(self) -> None:
        self.send(h11.EndOfMessage())

    async def flush(self) -> None:
        if self._pending:
            self._writer.write(b"".join(self._pending))
            self._pending.clear()
            await self._writer.drain()

    async def json(
        self, status: int, body: dict[str, Any], *, close: bool = False, head: bool = False
    ) -> None:
        """A whole JSON reply (no body for HEAD), in one write."""
        data = json.dumps(body).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
        if close:
            headers.append(("connection", "close"))
        self.start(status, headers)
        if not head:
            self.data(data)
        self.end()
        await self.flush()


Handler = Callable[[HttpRequest, Exchange], Awaitable[None]]
BadRequest = Callable[[int, str], dict[str, Any]]
"""Status and reason → the JSON error body to send for an unparseable request."""


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    bad_request: BadRequest,
) -> None:
    """Requests on one keep-alive connection, one at a time, until either side closes.
    Never raises: a broken client or a bug in one exchange ends only this connection."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        while True:
            request = await _read_request(conn, reader, writer)
            if request is None:
                break
            await handler(request, Exchange(conn, writer))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            with contextlib.suppress(Exception):
                await Exchange(conn, writer).json(status, bad_request(status, str(exc)), close=True)
    except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError):
        pass
    except asyncio.CancelledError:
        pass
    except Exception:  # the gateway must outlive any one connection
        log.exception("gateway: connection failed")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> HttpRequest | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and head is None:
                return None
            continue
        if event is h11.PAUSED:  # CONNECT: complete as far as a refusal is concerned
            break
        if isinstance(event, h11.Request):
            head = event
            if conn.they_are_waiting_for_100_continue:
                continue_ = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                writer.write(continue_ or b"")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REQUEST_BYTES:
                raise h11.RemoteProtocolError("request body too large", 413)
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            return None
    if head is None:
        return None
    return HttpRequest(
        head.method.decode("latin-1").upper(),
        head.target.decode("latin-1"),
        [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in head.headers],
        bytes(body),
    )

"""A real webhook endpoint on loopback that answers with scripted statuses and keeps what it
received, for tests of recorded deliveries and redelivery (the testbed resends over HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from testbed.github.server import bind_socket


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers `statuses` in order, then `default`; `url` is its webhook URL."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    default: int = 202
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *statuses: int, default: int | None = None) -> None:
        with self.lock:
            self.statuses = list(statuses)
            if default is not None:
                self.default = default

    def guids(self) -> list[str]:
        with self.lock:
            return [r.headers["x-github-delivery"] for r in self.received]

    async def hook(self, request: Request) -> JSONResponse:
        body = await request.body()
        with self.lock:
            self.received.append(Received(dict(request.headers), body))
            status = self.statuses.pop(0) if self.statuses else self.default
        return JSONResponse({"status": status}, status_code=status)


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/webhook", receiver.hook, methods=["POST"])])
    sock = bind_socket()
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/webhook"
    config = uvicorn.Config(app, loop="asyncio", log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="hook-receiver", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the webhook receiver did not start")
        time.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

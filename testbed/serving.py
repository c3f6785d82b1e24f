"""Serving a testbed app with uvicorn in a daemon thread (tests and demos)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn


def serve_in_thread(
    app: Any, sock: socket.socket, *, name: str, **options: Any
) -> tuple[uvicorn.Server, threading.Thread]:
    """Start serving `app` on the already bound `sock`, quietly (no access log, no lifespan).

    Returns at once: the caller waits for `server.started` and, to stop, sets
    `server.should_exit` and joins the thread."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    return server, thread

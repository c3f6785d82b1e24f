"""Run the scripted model server in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed.models.script import Script, load_script, script_from_data
from testbed.models.server import ModelServer, RecordedRequest
from testbed.serving import serve_in_thread


class RunningModelServer:
    """A live server: `url` is the base (`http://127.0.0.1:PORT`), no path."""

    def __init__(self, server: ModelServer, url: str) -> None:
        self.server = server
        self.url = url

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def requests_for(self, protocol: str) -> list[RecordedRequest]:
        return self.server.requests_for(protocol)

    def set_script(self, script: Script | dict[str, Any] | list[Any] | str | Path) -> None:
        self.server.set_script(as_script(script))

    def reset(self) -> None:
        self.server.reset()


def as_script(script: Script | dict[str, Any] | list[Any] | str | Path) -> Script:
    """A `Script`, its data (dict, or list of rules) or a path to a YAML/JSON file."""
    if isinstance(script, Script):
        return script
    if isinstance(script, str | Path):
        return load_script(script)
    return script_from_data(script)


@contextmanager
def running_model_server(
    script: Script | dict[str, Any] | list[Any] | str | Path, *, host: str = "127.0.0.1"
) -> Iterator[RunningModelServer]:
    """Serve `script` with uvicorn on a free port until the block exits."""
    model_server = ModelServer(as_script(script))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server, thread = serve_in_thread(
        model_server.app, sock, name="model-server", ws="none", timeout_graceful_shutdown=5
    )
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the model server failed to start")
            threading.Event().wait(0.01)
        yield RunningModelServer(model_server, f"http://{host}:{port}")
    finally:
        model_server.closing.set()
        server.should_exit = True
        thread.join(10)
        sock.close()

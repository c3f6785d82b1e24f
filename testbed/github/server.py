"""Assemble the fake api.github.com and run it on loopback (in a thread for tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from testbed.github import (
    control,
    git_http,
    graphql,
    routes_checks,
    routes_hooks,
    routes_issues,
    routes_manifest,
    routes_pulls,
    routes_repos,
)
from testbed.github.errors import GitHubError, error_body
from testbed.github.middleware import GitHubMiddleware
from testbed.github.shapes import clone_url
from testbed.github.state import GitHubState, InstallationToken, Repo
from testbed.github.web import ok
from testbed.serving import serve_in_thread


async def _github_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GitHubError)
    return ok(exc.body(), exc.status, headers=exc.headers or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "Not Found" if exc.status_code == 404 else str(exc.detail)
    return ok(error_body(exc.status_code, message), exc.status_code)


def create_app(state: GitHubState) -> Starlette:
    """The ASGI app; usable in-process via `httpx.ASGITransport` too (git needs a socket)."""
    app = Starlette(
        routes=[
            *control.routes,
            *routes_repos.routes,
            *routes_hooks.routes,
            *routes_issues.routes,
            *routes_manifest.routes,
            *routes_pulls.routes,
            *routes_checks.routes,
            *graphql.routes,
            *git_http.routes,
        ],
        middleware=[Middleware(GitHubMiddleware, state=state)],
        exception_handlers={GitHubError: _github_error, HTTPException: _http_error},
    )
    app.state.github = state
    return app


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; binding it ourselves gives a free port with no race.

    `IPPROTO_TCP` matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    TCP, and without it every response waits ~40 ms on delayed ACKs.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class TestbedServer:
    """A running testbed: `url` is the API base, the git host and the html host at once."""

    __test__ = False  # not a pytest class

    state: GitHubState
    host: str
    port: int
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)
    sock: socket.socket = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def clone_url(self, repo: Repo | str) -> str:
        return clone_url(self.url, self.state.get_repo(repo))

    def authed_clone_url(self, repo: Repo | str, token: InstallationToken | str) -> str:
        """`http://x-access-token:<token>@host:port/owner/name.git`."""
        value = token.token if isinstance(token, InstallationToken) else token
        target = self.state.get_repo(repo)
        return f"http://x-access-token:{value}@{self.host}:{self.port}/{target.full_name}.git"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


def start_testbed(
    state: GitHubState | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> TestbedServer:
    """Serve `state` with uvicorn in a daemon thread; returns once it accepts connections."""
    state = state if state is not None else GitHubState()
    sock = bind_socket(host, port)
    bound_port = int(sock.getsockname()[1])
    state.base_url = f"http://{host}:{bound_port}"
    server, thread = serve_in_thread(
        create_app(state),
        sock,
        name="testbed-github",
        loop="asyncio",  # git http-backend's pipes misbehave under uvloop
        timeout_graceful_shutdown=2,
    )
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("testbed GitHub server did not start")
        time.sleep(0.01)
    return TestbedServer(state, host, bound_port, server, thread, sock)


@contextmanager
def running_testbed(
    state: GitHubState | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[TestbedServer]:
    """`with running_testbed(state) as tb:` → a live server at `tb.url`, stopped on exit."""
    testbed = start_testbed(state, host=host, port=port)
    try:
        yield testbed
    finally:
        testbed.stop()

"""Shared fixtures: a private Redis per test session, free ports, the App key, models."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from testbed.keys import KeyPair, new_key_pair
from testbed.models.harness import RunningModelServer, running_model_server

PR_SET_PDEATHSIG = 1
FIXTURES = Path(__file__).resolve().parents[1] / "testbed" / "fixtures" / "github-webhooks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """`preexec_fn` for the processes tests start: the kernel kills them when the test
    process dies (a pytest-timeout abort skips teardown and would leave them running)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class RedisServer:
    """A redis-server of our own on a free port, so test runs never share state."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="baro-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed; run scripts/install")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A flushed private Redis for one test."""
    redis_server.flush()
    return redis_server.url


# --- the App's private key ---------------------------------------------------------------


@pytest.fixture(scope="session")
def app_key() -> KeyPair:
    """One RSA key for the session's tests that configure an App (making one is slow)."""
    return new_key_pair()


@pytest.fixture(scope="session")
def pem(app_key: KeyPair) -> str:
    """The App private key as `BARO_GITHUB_PRIVATE_KEY` would hold it (PKCS#8 PEM)."""
    return app_key.pkcs8_pem


# --- the scripted model server -----------------------------------------------------------

Serve = Callable[[Any], RunningModelServer]


@pytest.fixture(scope="session")
def shared_model_server() -> Iterator[RunningModelServer]:
    """One server for the session: scripts are stateless, so tests just swap them."""
    with running_model_server({"rules": []}) as server:
        yield server


@pytest.fixture
def serve(shared_model_server: RunningModelServer) -> Serve:
    """`serve(script)` loads a script into the shared server with a clean log."""

    def load(script: Any) -> RunningModelServer:
        shared_model_server.set_script(script)
        shared_model_server.reset()
        return shared_model_server

    return load

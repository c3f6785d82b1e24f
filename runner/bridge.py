"""The sandbox's one loopback port, bridged to the runner's model gateway.

The sandbox keeps its own, empty network namespace (no resolv.conf, no route, only `lo`).
The gateway listens on a unix socket in a private host directory; that directory is
mounted read-only into the sandbox at `BRIDGE_DIR`, and `runner/bridge_forward.py`
(started by the sandboxed command itself, with the system python3) listens on
`127.0.0.1:port` inside the namespace and copies each connection to the socket. So a CLI
reaches exactly one thing, the gateway, which adds the key, forwards to one upstream and
meters; every other host or port is unreachable, and no secret is in the directory.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner.bwrap import Mount

if TYPE_CHECKING:
    from runner.gateway import Gateway

BRIDGE_DIR = "/run/baro-gateway"
SOCKET_NAME = "gateway.sock"
FORWARDER = Path(__file__).with_name("bridge_forward.py")
DEFAULT_PORT = 8377
PYTHON = "/usr/bin/python3"
"""The sandbox's system python (bound read-only with /usr) runs the forwarder."""


class GatewayBridge:
    """Host side of the bridge for one attempt: `await start()`, put `mount` into the
    sandboxed command's mounts, wrap its argv with `command`, give the CLI `url`."""

    def __init__(
        self, gateway: Gateway, *, port: int = DEFAULT_PORT, parent: Path | None = None
    ) -> None:
        if not 1024 <= port <= 65535:
            raise ValueError(f"bridge port {port} must be an unprivileged port (1024-65535)")
        self.gateway = gateway
        self.port = port
        self._parent = parent
        self._dir: Path | None = None

    def _make_directory(self) -> Path:
        # A short path: unix socket paths are limited to 108 bytes.
        directory = Path(tempfile.mkdtemp(prefix="baro-gw-", dir=self._parent))
        directory.chmod(0o711)  # the sandbox's uid must reach the socket, not list the dir
        shutil.copyfile(FORWARDER, directory / FORWARDER.name)
        (directory / FORWARDER.name).chmod(0o644)
        return directory

    async def start(self) -> None:
        directory = self._make_directory()
        socket_path = directory / SOCKET_NAME
        await self.gateway.start_unix(socket_path)
        # Connecting needs write permission on the socket; its directory is 0711.
        os.chmod(socket_path, 0o666)  # noqa: S103
        self._dir = directory

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the bridge has not been started")
        return self._dir

    @property
    def mount(self) -> Mount:
        return Mount(self.directory, BRIDGE_DIR)

    @property
    def url(self) -> str:
        """The gateway as the sandboxed CLI sees it."""
        return f"http://127.0.0.1:{self.port}"

    def command(self, argv: Sequence[str]) -> str:
        """The shell command that opens the port, then runs `argv` (exit status is argv's)."""
        forwarder = f"{BRIDGE_DIR}/{FORWARDER.name}"
        socket_path = f"{BRIDGE_DIR}/{SOCKET_NAME}"
        inner = [PYTHON, "-I", "-S", forwarder, str(self.port), socket_path, "--", *argv]
        return "exec " + shlex.join(inner)

    async def close(self) -> None:
        await self.gateway.aclose()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def __aenter__(self) -> GatewayBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

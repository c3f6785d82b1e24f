"""skopeo and umoci as the runner runs them: fixed environment, a timeout, readable errors.

Both are the containers project's own tools, packaged by Debian: skopeo speaks every
registry's auth dance (Docker Hub and GHCR bearer tokens, basic auth, ECR-style passwords),
follows manifest lists and converts Docker manifests to OCI; umoci applies OCI layers with
whiteouts, without root. Neither reads the runner's HOME or the host's registry settings:
they get a HOME, TMPDIR and registries.conf under the image store, credentials only through
the auth file the store writes (0600), and no credential ever appears in an argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence

from runner.images.errors import (
    DiskFull,
    ImageError,
    ImageNotFound,
    PullFailed,
    RegistryUnreachable,
    Unauthorized,
)
from runner.images.reference import ImageRef

STDERR_LIMIT = 64 * 1024
# Passed through so an operator's proxy keeps working; nothing else of the runner's own.
_PASSED = ("PATH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
# How skopeo and the registries word a failure (lowercased stderr); numbers as whole words,
# since digests in the same text are long runs of hex digits.
_UNREACHABLE = re.compile(
    r"connection refused|no such host|i/o timeout|network is unreachable|no route to host"
    r"|connection reset|tls handshake timeout|server gave http response to https client"
    r"|x509: |certificate|context deadline exceeded|\beof\b|dial tcp|pinging container registry"
)
_NOT_FOUND = re.compile(r"manifest unknown|name unknown|\bnot found\b|\b404\b")
_UNAUTHORIZED = re.compile(
    r"unauthorized|authentication required|(?<!permission )\bdenied\b|\b401\b|\b403\b|forbidden"
)


class ToolFailure(Exception):
    """A tool exited non-zero (or ran out of time); `stderr` is its own words."""

    def __init__(self, tool: str, returncode: int | None, stderr: str) -> None:
        super().__init__(f"{tool}: exit status {returncode}")
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr

    def last_line(self) -> str:
        lines = [line.strip() for line in self.stderr.strip().splitlines() if line.strip()]
        line = lines[-1] if lines else f"exit status {self.returncode}"
        # skopeo logs as `time=... level=fatal msg="..."`: keep the message.
        match = re.search(r'msg="(.*)"\s*$', line)
        if match:
            line = match.group(1).replace('\\"', '"')
        return line if len(line) <= 300 else line[:297] + "..."

    def cause(self) -> str:
        """The innermost reason (`connection refused`), without the URLs wrapped around it."""
        return self.last_line().rsplit(": ", 1)[-1]


def tool_env(
    base: Mapping[str, str], *, home: str, tmpdir: str, registries_conf: str
) -> dict[str, str]:
    env = {name: base[name] for name in _PASSED if name in base}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=home, TMPDIR=tmpdir, CONTAINERS_REGISTRIES_CONF=registries_conf, LC_ALL="C")
    return env


async def run_tool(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
) -> bytes:
    """Run `argv` to completion and return its stdout; `ToolFailure` otherwise. On timeout
    the whole process group is killed (skopeo starts helpers; none may outlive the pull)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise ToolFailure(argv[0], None, f"timed out after {timeout:g} s") from None
        raise
    if proc.returncode != 0:
        text = err[-STDERR_LIMIT:].decode(errors="replace")
        raise ToolFailure(os.path.basename(argv[0]), proc.returncode, text)
    return out


def explain(failure: ToolFailure, ref: ImageRef, host: str, *, has_credentials: bool) -> ImageError:
    """The maintainer's version of what skopeo or umoci said."""
    text = failure.stderr.lower()
    said = failure.last_line()
    if failure.returncode is None:
        return PullFailed(f"{failure.tool} {said} while getting image {ref}")
    if "no space left on device" in text or "disk quota exceeded" in text:
        return DiskFull(f"the runner's disk is full: cannot store image {ref}")
    if _UNAUTHORIZED.search(text):
        if has_credentials:
            return Unauthorized(
                f"registry {host} refused the runner's credentials for image {ref} ({said})"
            )
        return Unauthorized(
            f"registry {host} requires authentication for image {ref}: it is private (or does"
            f" not exist), and the runner has no credentials for {host}"
        )
    if _UNREACHABLE.search(text):
        return RegistryUnreachable(
            f"registry {host} is unreachable for image {ref} ({failure.cause()})", host
        )
    if _NOT_FOUND.search(text):
        what = f"tag {ref.tag!r}" if ref.digest is None else f"digest {ref.digest}"
        return ImageNotFound(
            f"image {ref} not found: registry {host} has no {what} in {ref.repository}"
            " (or no such repository)"
        )
    return PullFailed(f"getting image {ref} failed: {said}")


__all__ = ["ToolFailure", "explain", "run_tool", "tool_env"]

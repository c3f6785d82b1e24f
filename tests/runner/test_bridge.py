"""The sandbox's one loopback port: it reaches the gateway and nothing else, with no key
anywhere the sandboxed command can look."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from app.llm.prices import load_prices
from runner.bridge import BRIDGE_DIR, GatewayBridge
from runner.gateway import Gateway, Upstream
from runner.sandbox import Mount, NoSandbox, Sandbox, SandboxUnavailable
from testbed.models.harness import RunningModelServer, running_model_server
from tests.runner.conftest import Area

REAL_KEY = "sk-real-key-for-the-bridge-test-5c1d"

PROBE = r"""
import json, os, socket, urllib.request, urllib.error, sys
port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
out = {}
def connect(host, p):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((host, p)); return "connected"
    except OSError as exc:
        return type(exc).__name__ + ":" + str(exc.errno)
    finally:
        s.close()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models",
                             headers={"x-api-key": "dummy"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        out["gateway"] = [r.status, json.loads(r.read())["data"][0]["id"]]
except urllib.error.HTTPError as exc:
    out["gateway"] = [exc.code, exc.read().decode()[:200]]
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/responses", method="POST",
                             data=b"{}", headers={"content-type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as exc:
    out["other_upstream_path"] = exc.code
out["other_port"] = connect("127.0.0.1", port + 1)
out["host_upstream_port"] = connect("127.0.0.1", upstream_port)
out["private_host"] = connect("10.0.0.1", 80)
out["public_host"] = connect("1.1.1.1", 443)
out["ipv6"] = connect("::1", upstream_port)
try:
    socket.getaddrinfo("api.anthropic.com", 443)
    out["dns"] = "resolved"
except OSError as exc:
    out["dns"] = "failed"
out["resolv_conf"] = os.path.exists("/etc/resolv.conf")
out["interfaces"] = sorted(name for _i, name in socket.if_nameindex())
print("PROBE" + json.dumps(out))
"""

SNOOP = r"""
import os, sys
key = sys.argv[1].encode()[::-1]  # reversed on the command line, so argv holds no key
hits = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("environ", "cmdline"):
            try:
                if key in open(f"/proc/{pid}/{name}", "rb").read():
                    hits.append(f"/proc/{pid}/{name}")
            except OSError:
                pass
for top in ("/run", "/home", "/tmp", "/workspace", "/etc"):
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                if key in open(path, "rb").read():
                    hits.append(path)
            except OSError:
                pass
print("HITS" + repr(hits))
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningModelServer]:
    with running_model_server({"rules": [], "api_key": REAL_KEY}) as server:
        yield server


def _gateway(upstream: RunningModelServer) -> Gateway:
    return Gateway(
        Upstream("anthropic", upstream.url, api_key=REAL_KEY, model="claude-sonnet-5-5"),
        load_prices(),
    )


async def test_the_port_reaches_the_gateway_and_nothing_else(
    sandbox: Sandbox, area: Area, upstream: RunningModelServer
) -> None:
    upstream.reset()
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    async with GatewayBridge(_gateway(upstream)) as bridge:
        argv = ["/usr/bin/python3", "-c", PROBE, str(bridge.port), str(upstream_port)]
        result = await sandbox.run(
            bridge.command(argv), cwd=area.worktree, timeout=60, mounts=[bridge.mount]
        )
        tally = bridge.gateway.tally
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("PROBE"))
    probe = json.loads(line.removeprefix("PROBE"))
    assert probe["gateway"][0] == 200, probe  # through the gateway to the upstream, real key
    assert probe["other_upstream_path"] == 404  # a Responses path on an Anthropic upstream
    assert probe["other_port"].startswith("ConnectionRefusedError")
    assert probe["host_upstream_port"].startswith("ConnectionRefusedError")
    assert probe["ipv6"] != "connected"
    assert probe["private_host"].startswith("OSError:101")  # network unreachable
    assert probe["public_host"].startswith("OSError:101")
    assert probe["dns"] == "failed" and probe["resolv_conf"] is False
    assert probe["interfaces"] == ["lo"]
    assert tally.refused == 1
    seen = [r for r in upstream.requests if r.path == "/v1/models"]
    assert seen and all(r.headers.get("x-api-key") == REAL_KEY for r in seen)


async def test_the_real_key_is_nowhere_in_the_sandbox(
    sandbox: Sandbox, area: Area, upstream: RunningModelServer
) -> None:
    async with GatewayBridge(_gateway(upstream)) as bridge:
        argv = ["/usr/bin/python3", "-c", SNOOP, REAL_KEY[::-1]]
        result = await sandbox.run(
            bridge.command(argv), cwd=area.worktree, timeout=60, mounts=[bridge.mount]
        )
        listed = sorted(p.name for p in bridge.directory.iterdir())
    assert result.exit_code == 0, result.output
    assert "HITS[]" in result.output, result.output
    assert listed == ["bridge_forward.py", "gateway.sock"]


async def test_the_exit_status_is_the_commands(
    sandbox: Sandbox, area: Area, upstream: RunningModelServer
) -> None:
    async with GatewayBridge(_gateway(upstream)) as bridge:
        result = await sandbox.run(
            bridge.command(["/bin/sh", "-c", "echo out; exit 7"]),
            cwd=area.worktree,
            timeout=60,
            mounts=[bridge.mount],
        )
    assert result.exit_code == 7 and "out" in result.output


async def test_the_port_is_gone_without_the_bridge(sandbox: Sandbox, area: Area) -> None:
    probe = "exec 3<>/dev/tcp/127.0.0.1/8377 && echo connected || echo refused"
    result = await sandbox.run(f"bash -c {shlex.quote(probe)}", cwd=area.worktree, timeout=30)
    assert "refused" in result.output


async def test_mounts_that_would_expose_too_much_are_refused(sandbox: Sandbox, area: Area) -> None:
    for mount in (
        Mount(area.root, BRIDGE_DIR),  # the data directory (hidden)
        Mount(area.worktree.parent, "/x"),  # contains the worktree
        Mount(area.key_file.parent / "worktrees" / "other", "/workspace"),
    ):
        with pytest.raises(ValueError, match=r"refusing|overlaps"):
            await sandbox.run("true", cwd=area.worktree, timeout=10, mounts=[mount])


async def test_no_sandbox_cannot_bridge(area: Area) -> None:
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        await NoSandbox().run(
            "true", cwd=area.worktree, timeout=10, mounts=[Mount(area.worktree, "/x")]
        )

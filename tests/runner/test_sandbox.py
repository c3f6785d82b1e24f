"""The bubblewrap sandbox against the real thing: what a command can see, reach and use."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.sandbox import (
    CommandResult,
    NoSandbox,
    Sandbox,
    SandboxPolicy,
    SandboxUnavailable,
    make_sandbox,
)
from tests.runner.conftest import Area, make_policy

SECRET_VALUE = "s3cr3t-webhook-value-4711"
TOKEN_VALUE = "ghs_0123456789abcdefghijABCDEFGHIJ"


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback; returns its port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


@pytest.fixture
def runner_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BARO_GITHUB_WEBHOOK_SECRET", SECRET_VALUE)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN_VALUE)


def marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_command_runs_in_worktree_and_writes_nowhere_else(
    sandbox: Sandbox, area: Area
) -> None:
    result = await sandbox.run(
        "pwd; echo hello > made.txt; mkdir -p pkg && echo x > pkg/mod.py;"
        " touch /usr/x; touch /etc/x; touch /x; echo private > /tmp/t && cat /tmp/t",
        cwd=area.worktree,
        timeout=10,
    )
    assert result.output.splitlines()[0] == "/workspace"
    assert result.output.count("Read-only file system") == 3
    assert "private" in result.output
    made = area.worktree / "made.txt"
    assert made.read_text() == "hello\n"
    assert not Path("/usr/x").exists()
    assert not Path("/etc/x").exists()
    # Outside a command the worktree belongs to the runner again.
    for path in (area.worktree, made, area.worktree / "pkg", area.worktree / "pkg" / "mod.py"):
        assert path.stat().st_uid == os.geteuid()


async def test_other_repositories_and_keys_are_invisible(sandbox: Sandbox, area: Area) -> None:
    paths = [area.other_worktree_file, area.key_file, area.root, Path("/work"), Path("/root")]
    checks = "; ".join(f"test -e {p} && echo 'visible {p}'" for p in paths)
    result = await sandbox.run(
        f"{checks}; ls -a /; ls -a /workspace/..; cat /etc/gitconfig /etc/pip.conf; true",
        cwd=area.worktree,
        timeout=10,
    )
    assert "visible" not in result.output
    assert "other-repository-secret" not in result.output
    assert "PRIVATE KEY" not in result.output
    listing = result.output.split()
    assert "root" not in listing
    assert "work" not in listing


async def test_no_network_by_default(sandbox: Sandbox, area: Area, listener: int) -> None:
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{listener} && echo connected"
    result = await sandbox.run(probe, cwd=area.worktree, timeout=10)
    assert "connected" not in result.output
    assert result.exit_code != 0

    shared = await sandbox.run(probe, cwd=area.worktree, timeout=10, network=True)
    assert "connected" in shared.output
    assert shared.exit_code == 0


async def test_resolv_conf_only_with_network(sandbox: Sandbox, area: Area) -> None:
    if not Path("/etc/resolv.conf").exists():
        pytest.skip("host has no /etc/resolv.conf")
    off = await sandbox.run("test -e /etc/resolv.conf", cwd=area.worktree, timeout=10)
    on = await sandbox.run("test -e /etc/resolv.conf", cwd=area.worktree, timeout=10, network=True)
    assert (off.exit_code, on.exit_code) == (1, 0)


@pytest.mark.usefixtures("runner_secrets")
async def test_environment_is_scrubbed(sandbox: Sandbox, area: Area) -> None:
    result = await sandbox.run(
        "env; cat /proc/*/environ | tr '\\0' '\\n'",
        cwd=area.worktree,
        timeout=10,
        env={"SAFE_FLAG": "on"},
    )
    assert SECRET_VALUE not in result.output
    assert TOKEN_VALUE not in result.output
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "SAFE_FLAG"}
    allowed.add("PYTHONDONTWRITEBYTECODE")
    assert names - allowed <= {"PWD", "SHLVL", "_"}
    assert "TERM=dumb" in result.output
    assert "SAFE_FLAG=on" in result.output


@pytest.mark.parametrize(
    "name",
    [
        "GITHUB_TOKEN",
        "BARO_REDIS_URL",
        "REDIS_URL",
        "OPENAI_API_KEY",
        "DEEPSEEK_API_BASE",
        "MY_SECRET",
        "DB_PASSWORD",
        "SOME_API_THING",
        "GH_PAT",
    ],
)
async def test_secret_looking_variables_are_refused(
    sandbox: Sandbox, area: Area, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        await sandbox.run("true", cwd=area.worktree, timeout=5, env={name: "x"})
    assert not any(area.worktree.iterdir())


async def test_credential_values_are_refused(sandbox: Sandbox, area: Area) -> None:
    with pytest.raises(ValueError, match="NOTE"):
        await sandbox.run("true", cwd=area.worktree, timeout=5, env={"NOTE": TOKEN_VALUE})


async def test_runner_processes_are_invisible(sandbox: Sandbox, area: Area) -> None:
    result = await sandbox.run(
        f"ls /proc | grep -cE '^[0-9]+$'; test -e /proc/{os.getpid()}/environ && echo seen;"
        " ps -e -o pid=,comm=",
        cwd=area.worktree,
        timeout=10,
    )
    lines = result.output.splitlines()
    assert int(lines[0]) <= 6
    if os.getpid() > 10:
        assert "seen" not in result.output
    commands = {line.split()[1] for line in lines[1:]}
    assert commands <= {"bwrap", "bash", "ps", "grep", "ls"}
    assert "python" not in result.output and "pytest" not in result.output


async def test_timeout_kills_the_whole_process_group(sandbox: Sandbox, area: Area) -> None:
    marker = f"baro-marker-{uuid.uuid4().hex}"
    command = (
        f"(exec -a {marker} sleep 1000) & "
        f"setsid bash -c 'exec -a {marker} sleep 1000' & "
        f"nohup bash -c 'exec -a {marker} sleep 1000' >/dev/null 2>&1 & "
        "echo started; sleep 1000"
    )
    started = time.monotonic()
    result = await sandbox.run(command, cwd=area.worktree, timeout=1)
    assert time.monotonic() - started < 5
    assert result.timed_out
    assert result.exit_code is None
    assert result.killed_by_signal == 9
    assert "started" in result.output
    deadline = time.monotonic() + 3
    while marked_processes(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert marked_processes(marker) == []


async def test_huge_output_is_capped_head_and_tail(sandbox: Sandbox, area: Area) -> None:
    tracemalloc.start()
    try:
        result = await sandbox.run(
            "echo FIRST; yes | head -c 50000000; echo; echo LAST",
            cwd=area.worktree,
            timeout=30,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    head, tail = sandbox.policy.head_bytes, sandbox.policy.tail_bytes
    total = len("FIRST\n") + 50_000_000 + len("\nLAST\n")
    assert result.truncated_bytes == total - head - tail
    assert result.output.startswith("FIRST\n")
    assert result.output.endswith("LAST\n")
    assert f"[... {result.truncated_bytes} bytes of output dropped ...]" in result.output
    assert len(result.output) < head + tail + 100
    assert peak < 8 * 1024 * 1024


async def test_process_limit_fails_gracefully(area: Area) -> None:
    sandbox = Sandbox(make_policy(area, processes=64))
    script = (
        "import subprocess\n"
        "children = []\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        children.append(subprocess.Popen(['sleep', '30']))\n"
        "except OSError as exc:\n"
        "    print('limited after', len(children), type(exc).__name__)\n"
        "    raise SystemExit(3)\n"
    )
    started = time.monotonic()
    result = await sandbox.run(f"python3 -c {shlex.quote(script)}", cwd=area.worktree, timeout=15)
    assert result.exit_code == 3, result.output
    assert "limited after" in result.output
    assert int(result.output.split()[2]) < 64
    assert time.monotonic() - started < 10


async def test_file_size_limit(area: Area) -> None:
    sandbox = Sandbox(make_policy(area, file_size_bytes=1024 * 1024))
    result = await sandbox.run(
        "head -c 10M /dev/zero > big; echo status=$?", cwd=area.worktree, timeout=10
    )
    assert "status=0" not in result.output
    assert (area.worktree / "big").stat().st_size <= 1024 * 1024


async def test_memory_limit(area: Area) -> None:
    sandbox = Sandbox(make_policy(area, memory_bytes=512 * 1024 * 1024))
    result = await sandbox.run(
        "python3 -c 'b = bytearray(2 * 1024 ** 3); print(\"allocated\")'",
        cwd=area.worktree,
        timeout=10,
    )
    assert result.exit_code != 0
    assert "MemoryError" in result.output
    assert "allocated" not in result.output


async def test_exit_status_and_signals(sandbox: Sandbox, area: Area) -> None:
    assert (await sandbox.run("exit 3", cwd=area.worktree, timeout=5)).exit_code == 3
    killed = await sandbox.run("kill -SEGV $$", cwd=area.worktree, timeout=5)
    assert (killed.exit_code, killed.killed_by_signal) == (139, 11)


async def test_self_check_passes(sandbox: Sandbox, area: Area) -> None:
    await sandbox.self_check(scratch_parent=area.root)


async def test_self_check_without_bubblewrap(area: Area) -> None:
    policy = SandboxPolicy(bwrap_path=str(area.root / "no-such-bwrap"))
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        await Sandbox(policy).self_check()


async def test_self_check_explains_missing_namespaces(area: Area) -> None:
    fake = area.root / "fake-bwrap"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "bubblewrap 0.8.0"; exit 0; fi\n'
        'echo "bwrap: Creating new namespace failed: Operation not permitted" >&2\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailable) as caught:
        await Sandbox(SandboxPolicy(bwrap_path=str(fake))).self_check()
    message = str(caught.value)
    assert "Operation not permitted" in message
    assert "seccomp=unconfined" in message
    assert "BARO_SANDBOX=none" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root runner drops to another uid")
async def test_self_check_explains_unreachable_binds(area: Area) -> None:
    tool = area.root / "private" / "toolchain"
    tool.mkdir(parents=True)
    (area.root / "private").chmod(0o700)
    with pytest.raises(SandboxUnavailable, match=r"chmod o\+x"):
        await Sandbox(SandboxPolicy(extra_ro_binds=(tool,))).self_check()


def test_policy_refuses_wholesale_and_hidden_binds(area: Area) -> None:
    for path in ("/", "/root", "/home", "/work", "/var", "/tmp", "/etc"):
        with pytest.raises(ValueError, match="wholesale"):
            SandboxPolicy(extra_ro_binds=(Path(path),))
    with pytest.raises(ValueError, match="overlaps hidden"):
        SandboxPolicy(extra_ro_binds=(area.worktree,), hidden_paths=(area.root,))


async def test_worktree_may_not_expose_hidden_paths(sandbox: Sandbox, area: Area) -> None:
    with pytest.raises(ValueError, match="contains hidden path"):
        await sandbox.run("true", cwd=area.root, timeout=5)
    with pytest.raises(ValueError, match="absolute"):
        await sandbox.run("true", cwd=Path("relative"), timeout=5)


@pytest.mark.usefixtures("runner_secrets")
async def test_no_sandbox_warns_and_still_limits(
    area: Area, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="runner.sandbox"):
        unsandboxed = make_sandbox("none", make_policy(area))
    assert isinstance(unsandboxed, NoSandbox)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "WITHOUT isolation" in warnings[0].getMessage()

    result = await unsandboxed.run("env; pwd; echo hi > f", cwd=area.worktree, timeout=5)
    assert SECRET_VALUE not in result.output
    assert TOKEN_VALUE not in result.output
    assert str(area.worktree) in result.output
    assert (area.worktree / "f").read_text() == "hi\n"

    started = time.monotonic()
    slow = await unsandboxed.run("sleep 1000 & sleep 1000", cwd=area.worktree, timeout=0.5)
    assert slow.timed_out and time.monotonic() - started < 3

    with pytest.raises(ValueError, match="GITHUB_TOKEN"):
        await unsandboxed.run("true", cwd=area.worktree, timeout=5, env={"GITHUB_TOKEN": "x"})
    await unsandboxed.self_check()


def test_make_sandbox_modes(area: Area) -> None:
    assert isinstance(make_sandbox("bwrap", make_policy(area)), Sandbox)
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        make_sandbox("docker", make_policy(area))  # type: ignore[arg-type]


def test_works_under_uvloop(sandbox: Sandbox, area: Area) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[CommandResult, CommandResult]:
        done = await sandbox.run("echo hi > f; id -u", cwd=area.worktree, timeout=5)
        slow = await sandbox.run("sleep 100 & sleep 100", cwd=area.worktree, timeout=0.5)
        return done, slow

    done, slow = uvloop.run(scenario())
    assert (done.exit_code, done.output) == (0, "1000\n")
    assert slow.timed_out
    assert (area.worktree / "f").stat().st_uid == os.geteuid()

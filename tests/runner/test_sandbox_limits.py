"""Resource attacks on the sandbox, against real bubblewrap and real processes.

Each test also checks that nothing happened outside the sandbox: no file on the host, no
process left alive, the worktree back with the runner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner.limits import MiB
from runner.pidns import abandon
from runner.sandbox import Sandbox, SandboxProcessesAlive, SandboxUnavailable, require_quiet
from tests.runner.conftest import Area, make_policy
from tests.runner.test_sandbox import marked_processes


def host_files_named(marker: str) -> list[Path]:
    found: list[Path] = []
    for place in (Path("/dev/shm"), Path("/tmp"), Path("/dev")):
        found += [p for p in place.iterdir() if marker in p.name]
    return found


async def test_tmpfs_are_sized_and_dev_is_read_only(area: Area) -> None:
    policy = dataclasses.replace(make_policy(area), tmp_size_bytes=8 * MiB, shm_size_bytes=4 * MiB)
    sandbox = Sandbox(policy)
    marker = f"baro-fill-{uuid.uuid4().hex}"
    result = await sandbox.run(
        f"for d in /dev/shm /tmp $HOME; do head -c 64M /dev/zero > $d/{marker}; "
        f'echo "$d=$(du -k $d/{marker} | cut -f1)"; done; '
        f"echo x > /dev/{marker} || echo dev=refused; mkdir /dev/{marker} || echo devdir=refused; "
        "echo ok > /dev/null && echo null=ok; head -c 8 /dev/urandom | wc -c; "
        "python3 -c 'import os, pty; m, s = pty.openpty(); print(\"pty=ok\")'",
        cwd=area.worktree,
        timeout=30,
    )
    sizes = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    assert int(sizes["/dev/shm"]) <= 4 * 1024, result.output
    assert int(sizes["/tmp"]) <= 8 * 1024, result.output
    assert int(sizes["/home/sandbox"]) <= 8 * 1024, result.output
    assert "No space left on device" in result.output
    assert sizes["dev"] == "refused" and sizes["devdir"] == "refused"
    assert "Read-only file system" in result.output
    assert sizes["null"] == "ok" and sizes["pty"] == "ok"
    assert "\n8\n" in result.output
    assert host_files_named(marker) == []
    assert not any(area.worktree.iterdir())
    assert area.worktree.stat().st_uid == os.geteuid()


def namespace_members(inode: int) -> list[int]:
    """Live processes in PID namespace `inode`, as the test sees /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "pid").st_ino != inode:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def private_uid() -> int:
    """A uid for this test's commands alone (as root): other runs on this machine draw theirs
    from the default range."""
    return 2_100_000_000 + secrets.randbelow(40_000_000)


def processes_of_uid(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            real = next(line for line in status.splitlines() if line.startswith("Uid:"))
            if int(real.split()[1]) == uid and "State:\tZ" not in status:
                found.append(int(entry.name))
    return found


IDENTIFY = 'echo "ns=$(stat -L -c %i /proc/self/ns/pid)"; '


def assert_nothing_left(output: str, sandbox: Sandbox) -> None:
    """No process of the command's PID namespace (nor, as root, of its uid) lives."""
    inode = int(output.split("ns=", 1)[1].split()[0])
    assert inode != os.stat("/proc/self/ns/pid").st_ino
    assert namespace_members(inode) == []
    low, high = sandbox.policy.uid_range
    if os.geteuid() == 0 and high == low + 1:
        assert processes_of_uid(low) == []


def confined(area: Area, **changes: Any) -> Sandbox:
    """A sandbox whose commands (as root) all run as one uid of their own."""
    uid = private_uid()
    policy = make_policy(area, processes=changes.pop("processes", 64))
    return Sandbox(dataclasses.replace(policy, uid_range=(uid, uid + 1), **changes))


def assert_worktree_is_the_runners(worktree: Path) -> None:
    for path in [worktree, *worktree.rglob("*")]:
        assert path.lstat().st_uid == os.geteuid(), path


@pytest.mark.parametrize("then", ["sleep 30", "exit 0"], ids=["timeout", "exit"])
async def test_fork_bomb_is_gone_when_run_returns(area: Area, then: str) -> None:
    sandbox = confined(area, processes=256)
    # Off the output pipe, so that nothing waits for the bomb's processes to close it.
    bomb = await sandbox.run(
        IDENTIFY + f"echo before > f; exec >/dev/null 2>&1; :(){{ :|:& }};:; {then}",
        cwd=area.worktree,
        timeout=3,
    )
    assert bomb.timed_out == (then != "exit 0")
    assert_nothing_left(bomb.output, sandbox)
    assert_worktree_is_the_runners(area.worktree)

    after = await sandbox.run(IDENTIFY + "echo next > g; cat f", cwd=area.worktree, timeout=30)
    assert after.exit_code == 0, after.output
    assert after.output.endswith("before\n")
    assert (area.worktree / "g").read_text() == "next\n"
    assert_nothing_left(after.output, sandbox)
    assert_worktree_is_the_runners(area.worktree)


async def test_background_processes_are_gone_when_run_returns(area: Area) -> None:
    sandbox = confined(area)
    marker = f"baro-bg-{uuid.uuid4().hex}"
    result = await sandbox.run(
        IDENTIFY + f"(exec -a {marker} sleep 1000) & setsid sleep 1000 & "
        "nohup sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 & echo started",
        cwd=area.worktree,
        timeout=30,
    )
    assert result.exit_code == 0 and "started" in result.output
    assert not result.timed_out
    assert_nothing_left(result.output, sandbox)
    assert_worktree_is_the_runners(area.worktree)


THREE_HOGS = (
    'for i in 1 2 3; do python3 -c \'import time; b = b"x" * (300 * 1024 * 1024); '
    'print("allocated", flush=True); time.sleep(60)\' & done; wait; echo finished'
)


@pytest.mark.parametrize("mechanism", ["cgroup", "watchdog"])
async def test_total_memory_is_capped_across_processes(area: Area, mechanism: str) -> None:
    sandbox = confined(
        area, memory_total_bytes=512 * MiB, cgroup="auto" if mechanism == "cgroup" else "none"
    )
    parent, why = await sandbox.memory_cap()
    if mechanism == "cgroup" and parent is None:
        pytest.skip(f"no cgroup can be made here: {why}")
    assert (parent is None) == (mechanism == "watchdog")
    result = await sandbox.run(IDENTIFY + THREE_HOGS, cwd=area.worktree, timeout=90)
    assert not result.timed_out
    assert "finished" not in result.output
    assert not result.ok
    assert result.limit_exceeded is not None
    assert "more than 512 MiB of memory in total" in result.output
    assert result.output.rstrip().endswith("]")
    assert_nothing_left(result.output, sandbox)
    assert_worktree_is_the_runners(area.worktree)


async def test_processes_under_the_total_memory_cap_run(area: Area) -> None:
    policy = dataclasses.replace(make_policy(area), memory_total_bytes=1024 * MiB)
    result = await Sandbox(policy).run(
        THREE_HOGS.replace("300", "100").replace("time.sleep(60)", "time.sleep(1)"),
        cwd=area.worktree,
        timeout=60,
    )
    assert result.ok, result.output
    assert result.output.count("allocated") == 3 and "finished" in result.output


def growth_policy(area: Area, cap: int) -> Sandbox:
    return confined(area, write_limit_bytes=cap)


async def test_worktree_growth_over_the_cap_fails_the_command(area: Area) -> None:
    sandbox = growth_policy(area, 8 * MiB)
    (area.worktree / "old").write_bytes(b"o" * (6 * MiB))  # already there: not this command's
    result = await sandbox.run(
        IDENTIFY + "head -c 20M /dev/urandom > big; exit 0", cwd=area.worktree, timeout=60
    )
    assert not result.ok and result.exit_code != 0
    assert result.limit_exceeded is not None
    # Judged after the command (or, had the poll caught it first, killed during it).
    assert re.search(
        r"(added 20 MiB|killed: it wrote \d+ MiB) to the worktree, more than the 8 MiB one "
        "command may add",
        result.output,
    ), result.output
    assert "Delete what is not needed" in result.output
    assert_nothing_left(result.output, sandbox)
    assert_worktree_is_the_runners(area.worktree)

    # The agent deletes it; the next command is judged on its own growth.
    cleaned = await sandbox.run(
        "rm big && head -c 2M /dev/urandom > small", cwd=area.worktree, timeout=60
    )
    assert cleaned.ok, cleaned.output
    assert not (area.worktree / "big").exists()


async def test_worktree_growth_is_stopped_while_the_command_runs(area: Area) -> None:
    sandbox = growth_policy(area, 8 * MiB)
    result = await sandbox.run(
        IDENTIFY + "for i in $(seq 10); do head -c 5M /dev/urandom > part$i; done; "
        "sleep 60; echo survived",
        cwd=area.worktree,
        timeout=90,
    )
    assert not result.timed_out and "survived" not in result.output
    assert result.killed_by_signal == 9
    assert "the command was killed: it wrote" in result.output
    assert "more than the 8 MiB one command may add" in result.output
    assert_nothing_left(result.output, sandbox)
    assert_worktree_is_the_runners(area.worktree)


async def test_worktree_growth_under_the_cap_is_fine(area: Area) -> None:
    sandbox = growth_policy(area, 8 * MiB)
    result = await sandbox.run(
        "head -c 3M /dev/urandom > a; echo ok", cwd=area.worktree, timeout=60
    )
    assert result.ok and result.limit_exceeded is None
    assert result.output == "ok\n"


async def test_self_check_says_how_memory_is_capped(
    area: Area, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="runner.sandbox"):
        await confined(area, cgroup="none").self_check(scratch_parent=area.root)
    said = [r.getMessage() for r in caplog.records if "memory cap" in r.getMessage()]
    assert len(said) == 1 and "watchdog" in said[0] and "BARO_SANDBOX_CGROUP=none" in said[0]


async def test_an_unusable_cgroup_setting_stops_start_up(area: Area) -> None:
    sandbox = confined(area, cgroup=area.root)
    with pytest.raises(SandboxUnavailable, match=r"BARO_SANDBOX_CGROUP: .* is not a cgroup v2"):
        await sandbox.self_check(scratch_parent=area.root)


async def test_a_cancelled_command_is_gone_when_the_cancel_lands(area: Area) -> None:
    sandbox = confined(area)
    marker = f"baro-cancel-{uuid.uuid4().hex}"
    task = asyncio.ensure_future(
        sandbox.run(
            f"echo x > f; (exec -a {marker} sleep 1000) & exec -a {marker} sleep 1000",
            cwd=area.worktree,
            timeout=60,
        )
    )
    while not marked_processes(marker):
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert marked_processes(marker) == []
    assert_worktree_is_the_runners(area.worktree)


async def test_a_worktree_whose_sandbox_would_not_die_is_left_alone(area: Area) -> None:
    sandbox = confined(area)
    (area.worktree / "f").write_text("x")
    abandon(area.worktree)
    with pytest.raises(SandboxProcessesAlive, match="would not die"):
        require_quiet(area.worktree.parent)
    with pytest.raises(SandboxProcessesAlive):
        await sandbox.run("echo y > f", cwd=area.worktree, timeout=10)
    assert (area.worktree / "f").read_text() == "x"
    require_quiet(area.other_worktree_file.parent)  # others are not affected

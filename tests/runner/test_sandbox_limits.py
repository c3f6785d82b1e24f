"""Resource attacks on the sandbox, against real bubblewrap and real processes.

Each test also checks that nothing happened outside the sandbox: no file on the host, no
process left alive, the worktree back with the runner.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

from runner.limits import MiB
from runner.sandbox import Sandbox
from tests.runner.conftest import Area, make_policy


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

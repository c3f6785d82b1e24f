"""Housekeeping of a runner's data directory, with real git, real flocks and a real process
that dies holding worktrees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.housekeeping import TMP_MIRROR_GRACE_SECONDS, WorktreeOwner, sweep, try_flock
from runner.workspace import Workspaces, cleanup
from tests.runner.test_workspace import BRANCH, RUN, Env, env, hub

__all__ = ["env", "hub"]  # the testbed fixtures, shared with test_workspace

DAY = 86400.0


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from app.gitcmd import GitAuth
    from runner.workspace import RepoRef, Workspaces

    async def main() -> None:
        data_dir, full_name, url, token, branch = sys.argv[1:6]
        ws = Workspaces(Path(data_dir), owner="doomed-runner")
        wt = await ws.prepare(
            RepoRef(full_name, url), branch, GitAuth(token), run_id="r9", story_id="S9",
            attempt=1,
        )
        print(wt.path, flush=True)
        time.sleep(600)

    asyncio.run(main())
    """
)


async def test_a_dead_runners_worktrees_go_and_a_live_ones_stay(env: Env) -> None:
    live = await env.prepare("S1")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(env.data_dir),
            env.ref.full_name,
            env.ref.clone_url,
            env.auth.token,
            BRANCH,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert child.stdout is not None
    try:
        doomed = Path(child.stdout.readline().strip())
        assert doomed.is_dir() and doomed.parent.name == "doomed-runner"
        # While the child lives, its checkouts are its own.
        assert sweep(env.data_dir, max_idle_seconds=DAY).worktrees == []
        assert doomed.is_dir()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    swept = sweep(env.data_dir, max_idle_seconds=DAY)
    assert swept.worktrees == [doomed.parent]
    assert not doomed.parent.exists()
    assert not (env.data_dir / "worktrees" / "doomed-runner.lock").exists()
    assert live.path.is_dir() and (live.path / "a.py").is_file()
    assert swept.mirrors == []  # just used
    await cleanup(live)


async def test_an_idle_mirror_is_removed_and_comes_back_on_demand(env: Env) -> None:
    wt = await env.prepare("S1")
    mirror = wt.mirror.path
    await cleanup(wt)
    assert sweep(env.data_dir, max_idle_seconds=DAY).mirrors == []  # just used

    age(wt.mirror.lock_path, 2 * DAY)
    async with wt.mirror.locked():  # in use by this very process: left alone
        assert sweep(env.data_dir, max_idle_seconds=DAY).mirrors == []
    assert mirror.is_dir()

    swept = sweep(env.data_dir, max_idle_seconds=DAY)
    assert swept.mirrors == [mirror]
    assert not mirror.exists() and wt.mirror.lock_path.exists()  # locks are never deleted

    again = await env.prepare("S2")  # fetched afresh
    assert again.base == env.head()
    assert (again.path / "a.py").read_text() == "x = 1\ny = 2\n"
    assert time.time() - wt.mirror.lock_path.stat().st_mtime < 60  # the use was stamped
    await cleanup(again)


async def test_half_made_mirrors_are_removed_once_surely_dead(env: Env) -> None:
    owner_dir = env.data_dir / "mirrors" / "octo"
    owner_dir.mkdir(parents=True)
    dead = owner_dir / ".demo.git.tmp-0badc0de"
    fresh = owner_dir / ".demo.git.tmp-f00dfeed"
    cut_short = owner_dir / ".demo.git.trash-12345678"  # a sweep killed mid-delete
    for path in (dead, fresh, cut_short):
        (path / "objects").mkdir(parents=True)
    age(dead, TMP_MIRROR_GRACE_SECONDS + 60)
    swept = sweep(env.data_dir, max_idle_seconds=DAY)
    assert swept.partial_mirrors == [dead, cut_short]
    assert not dead.exists() and not cut_short.exists() and fresh.is_dir()


async def test_kept_checkouts_are_trimmed_when_nobody_reuses_them(env: Env) -> None:
    wt = await env.prepare("S1")
    await env.ws.cleanup(wt)  # kept in the pool for the next story
    assert wt.path.is_dir()
    assert await env.ws.trim_idle(max_idle_seconds=3600) == 0
    assert wt.path.is_dir()
    assert await env.ws.trim_idle(max_idle_seconds=0) == 1
    assert not wt.path.exists()
    fresh = await env.prepare("S2")  # the pool is empty: a new checkout, not the removed one
    assert fresh.path != wt.path and fresh.path.is_dir()
    await cleanup(fresh)


def test_owner_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first = WorktreeOwner(tmp_path / "worktrees", "runner-a")
    directory = first.acquire()
    assert directory.is_dir() and oct(directory.stat().st_mode & 0o777) == "0o711"
    with try_flock(first.lock_path) as free:
        assert not free
    assert sweep(tmp_path, max_idle_seconds=DAY).worktrees == []
    first.release()
    assert sweep(tmp_path, max_idle_seconds=DAY).worktrees == [directory]


def test_loose_checkouts_without_an_owner_are_removed(tmp_path: Path) -> None:
    """Worktrees from before owners had locks (the old flat layout) are nobody's."""
    loose = tmp_path / "worktrees" / f"{RUN}-S1-1-abcdef"
    loose.mkdir(parents=True)
    (loose / "a.py").write_text("x = 1\n")
    assert sweep(tmp_path, max_idle_seconds=DAY).worktrees == [loose]
    assert not loose.exists()


def test_workspaces_claim_their_owner_directory(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path, owner="host/with:odd chars-" + "x" * 100 + "-4242-abc123")
    assert ws.worktrees_dir.parent == tmp_path / "worktrees"
    assert ws.worktrees_dir.name.endswith("-4242-abc123") and "/" not in ws.worktrees_dir.name
    assert len(ws.worktrees_dir.name) == 80
    ws.owner.acquire()
    other = WorktreeOwner(tmp_path / "worktrees", ws.worktrees_dir.name)
    with pytest.raises(RuntimeError, match="held by another process"):
        other.acquire()
    ws.close()
    assert other.acquire() == ws.worktrees_dir
    other.release()

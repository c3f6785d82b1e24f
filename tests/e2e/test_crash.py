"""Crash recovery: the worker and a runner killed with SIGKILL at random moments of a run.

Whatever was in flight, the run must still complete with one commit per story, one tracking
comment and one PR (arq re-delivers, leases lapse, the reaper resumes what was dropped).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.conftest import RedisServer
from tests.e2e.harness import Bot, World, await_run, bot_env, new_bot
from tests.e2e.scenario import Scenario
from tests.e2e.test_execution import PLAN, git_log, writes


def slow(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**turn, "latency": 0.7} for turn in turns]


def script(title: str) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": "plan",
                "match": {"first_user": title},
                "turns": [
                    {"tool_calls": [{"name": "submit_plan", "arguments": PLAN}], "latency": 0.5}
                ],
            },
            {
                "name": "S1",
                "match": {"first_user": "Implement story S1"},
                "turns": slow(writes("hello.txt", "hello\n")),
            },
            {
                "name": "S2",
                "match": {"first_user": "Implement story S2"},
                "turns": slow(writes("world.txt", "world\n")),
            },
            {
                "name": "S3",
                "match": {"first_user": "Implement story S3"},
                "turns": slow(writes("both.txt", "hello world\n")),
            },
        ]
    }


def crashing(
    world: World,
    models: RunningModelServer,
    title: str,
    files: dict[str, str | bytes] | None = None,
) -> Scenario:
    """The greeting plan with slow turns, and no default planner behind it."""
    s = Scenario.new(world, models, title, files)
    return s.rule(*script(title)["rules"]).script(defaults=False)


@pytest.fixture
def crash_bot(world: World, models: RunningModelServer) -> Iterator[Bot]:
    redis = RedisServer()
    redis.start()
    bot = new_bot(
        bot_env(world.testbed, world.app, redis.url, models.url, BARO_STORY_LEASE_SECONDS="4")
    )
    bot.start_all(runners=2)
    yield bot
    bot.stop()
    redis.stop()


async def kill_and_restart(bot: Bot, name: str) -> None:
    bot.procs[name].kill()
    bot.procs[name].wait(10)
    await asyncio.sleep(0.3)
    bot.start(name)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_run_survives_sigkill_of_worker_and_runner(
    world: World, crash_bot: Bot, models: RunningModelServer, seed: int
) -> None:
    rng = random.Random(seed)
    s = crashing(world, models, f"Crash seed {seed}")
    repo, issue = s.repo, s.issue
    await s.label(crash_bot)
    started = time.monotonic()
    for victim in rng.sample(["worker", "runner", "worker", "runner-1"], 3):
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        await kill_and_restart(crash_bot, victim)
    elapsed = time.monotonic() - started

    what = f"the run to finish (kills within {elapsed:.1f}s)"
    state = await s.ended(crash_bot, timeout=90, what=what)
    assert state["state"] == "done", {k: v["state"] for k, v in state["stories"].items()}
    subjects = [e.split("\x00")[0] for e in git_log(world, repo, state["branch"])]
    assert sorted(subjects[:3]) == ["S1: Hello file", "S2: World file", "S3: Both file"]
    assert len(subjects) == 4, subjects  # one commit per story, no duplicates
    bot_comments = [c for c in world.bot_comments(repo, issue.number) if "baro:run:" in c.body]
    assert len(bot_comments) == 1
    assert len(world.state.pulls(repo)) == 1


def run_events(bot: Bot, run_id: str) -> list[dict[str, Any]]:
    redis = Redis.from_url(bot.env["BARO_REDIS_URL"])
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in redis.xrange(f"baro:run:{run_id}:events")
    ]


def assert_one_of_everything(world: World, repo: Any, number: int, state: dict[str, Any]) -> None:
    assert state["state"] == "done", {k: v["state"] for k, v in state["stories"].items()}
    subjects = [e.split("\x00")[0] for e in git_log(world, repo, state["branch"])]
    assert len(subjects) == 4, subjects  # one commit per story, no duplicates
    comments = [c for c in world.bot_comments(repo, number) if "baro:run:" in c.body]
    assert len(comments) == 1
    assert len(world.state.pulls(repo)) == 1


async def test_a_worker_killed_during_the_intake_does_not_lose_the_trigger(
    world: World, crash_bot: Bot, models: RunningModelServer
) -> None:
    """arq would re-run the intake only after half an hour; the reaper resumes it."""
    s = crashing(world, models, "Crash during intake")
    stall = world.state.faults.add(method="GET", path=r"/permission$", delay=30)
    await s.label(crash_bot)
    await wait_for(lambda: stall.hits == 1, 30, "the intake to ask for the sender's permission")
    await kill_and_restart(crash_bot, "worker")

    state = await s.ended(crash_bot, timeout=90)
    assert_one_of_everything(world, s.repo, s.number, state)


async def test_a_worker_killed_while_opening_the_pull_request_opens_exactly_one(
    world: World, crash_bot: Bot, models: RunningModelServer
) -> None:
    s = crashing(world, models, "Crash while opening the PR")
    stall = world.state.faults.add(method="POST", path=r"/pulls$", delay=6)
    await s.label(crash_bot)
    await wait_for(lambda: stall.hits == 1, 60, "the worker to open the pull request")
    await kill_and_restart(crash_bot, "worker")  # the stalled request still creates the PR

    state = await s.ended(crash_bot, timeout=90)
    assert_one_of_everything(world, s.repo, s.number, state)
    assert state["pr_number"] == world.state.pulls(s.repo)[0].number


async def test_a_runner_killed_while_verifying_is_replaced(
    world: World, crash_bot: Bot, models: RunningModelServer
) -> None:
    # Slow only on the integrated branch (the stories' own checks run before S3 is committed).
    slow_on_branch = "git log -1 --format=%s | grep -q '^S3:' && sleep 8; true"
    files: dict[str, str | bytes] = {
        "README.md": "# x\n",
        ".github/baro.yml": f'verify:\n  - "{slow_on_branch}"\n',
    }
    s = crashing(world, models, "Crash while verifying", files)
    repo, issue = s.repo, s.issue
    await s.label(crash_bot)
    redis = Redis.from_url(crash_bot.env["BARO_REDIS_URL"])

    seen: list[str] = []

    def verifying(state: dict[str, Any]) -> bool:
        held = redis.get(f"baro:lease:{state['id']}:verify")
        text = held.decode() if held else ""
        seen[:] = [text] if ":verify:" in text else []
        return bool(seen)

    # On timeout the error shows the run's state and every process's log.
    await await_run(world, crash_bot, repo, issue.number, verifying, 120, "a runner to verify")
    holder = seen[0]
    pid = int(holder.split(":")[0].rsplit("-", 2)[1])  # runner id: host-pid-random
    victim = next(name for name, proc in crash_bot.procs.items() if proc.pid == pid)
    dead = Path(crash_bot.env["BARO_RUNNER_DATA_DIR"]) / "worktrees" / holder.split(":")[0]
    await wait_for(lambda: dead.is_dir() and any(dead.iterdir()), 20, "the verifier's worktree")
    await kill_and_restart(crash_bot, victim)

    state = await s.ended(crash_bot, timeout=90)
    assert_one_of_everything(world, repo, issue.number, state)
    assert [v["passed"] for v in state["verification"]] == [True]
    events = [e["kind"] for e in run_events(crash_bot, state["id"])]
    assert events.count("verified") == 1, events  # the dead runner never recorded a result
    # The restarted runner's housekeeping removed the checkouts the dead one left behind.
    await wait_for(lambda: not dead.exists(), 20, "the dead runner's worktrees to be swept")
    assert not dead.with_name(f"{dead.name}.lock").exists()

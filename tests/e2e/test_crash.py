"""Crash recovery: the worker and a runner killed with SIGKILL at random moments of a run.

Whatever was in flight, the run must still complete with one commit per story, one tracking
comment and one PR (arq re-delivers, leases lapse, the reaper resumes what was dropped).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.models.harness import RunningModelServer
from tests.conftest import RedisServer
from tests.e2e.harness import Bot, World, bot_env, new_bot, wait_run
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


def kill_and_restart(bot: Bot, name: str) -> None:
    bot.procs[name].kill()
    bot.procs[name].wait(10)
    time.sleep(0.3)
    bot.start(name)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_run_survives_sigkill_of_worker_and_runner(
    world: World, crash_bot: Bot, models: RunningModelServer, seed: int
) -> None:
    rng = random.Random(seed)
    repo = world.new_repo()
    title = f"Crash seed {seed}"
    issue = world.new_issue(repo, title)
    models.set_script(script(title))
    await world.deliver_label(crash_bot, repo, issue.number)
    started = time.monotonic()
    for victim in rng.sample(["worker", "runner", "worker", "runner-1"], 3):
        time.sleep(rng.uniform(0.5, 3.0))
        kill_and_restart(crash_bot, victim)
    elapsed = time.monotonic() - started

    what = f"the run to finish (kills within {elapsed:.1f}s)"
    state = wait_run(world, crash_bot, repo, issue.number, timeout=90, what=what)
    assert state["state"] == "done", {k: v["state"] for k, v in state["stories"].items()}
    subjects = [e.split("\x00")[0] for e in git_log(world, repo, state["branch"])]
    assert sorted(subjects[:3]) == ["S1: Hello file", "S2: World file", "S3: Both file"]
    assert len(subjects) == 4, subjects  # one commit per story, no duplicates
    bot_comments = [c for c in world.bot_comments(repo, issue.number) if "baro:run:" in c.body]
    assert len(bot_comments) == 1
    assert len(world.state.pulls(repo)) == 1

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.github.server import TestbedServer, running_testbed
from testbed.github.state import GitHubState
from testbed.models.harness import RunningModelServer, running_model_server
from tests.conftest import RedisServer
from tests.e2e.harness import Bot, World, bot_env, new_bot

ONE_STORY_PLAN: dict[str, Any] = {
    "summary": "Add the requested function.",
    "design_note": "Put it in calc.py next to add().",
    "stories": [
        {
            "id": "S1",
            "title": "Implement it",
            "description": "Write the function and its test.",
            "depends_on": [],
            "writes": ["calc.py"],
            "acceptance": ["the function exists"],
            "tests": ["pytest"],
            "tier": "light",
        }
    ],
}

DEFAULT_SCRIPT: dict[str, Any] = {
    "rules": [
        {
            "name": "planner-default",
            "match": {"system": "baro's planner"},
            "turns": [
                {"tool_calls": [{"name": "list_files", "arguments": {}}]},
                {"tool_calls": [{"name": "submit_plan", "arguments": ONE_STORY_PLAN}]},
            ],
        }
    ]
}


@pytest.fixture(scope="session")
def testbed() -> Iterator[TestbedServer]:
    with GitHubState() as state, running_testbed(state) as server:
        yield server


@pytest.fixture(scope="session")
def models() -> Iterator[RunningModelServer]:
    with running_model_server(DEFAULT_SCRIPT) as server:
        yield server


@pytest.fixture(scope="session")
def world(testbed: TestbedServer) -> World:
    state = testbed.state
    app = state.create_app("baro-test")
    installation = state.create_installation(app, "octo-org")
    return World(testbed, app, installation)


@pytest.fixture(scope="session")
def e2e_redis() -> Iterator[RedisServer]:
    """The e2e bots' own Redis: in-process tests of the same worker share `redis_server`, and
    what they cache there (installation tokens of another testbed's App 1001) must not reach
    a bot."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def fresh_e2e_redis(e2e_redis: RedisServer) -> None:
    """Each module's bots start on an empty Redis: a run or a queued job that an earlier
    module's bot left behind would otherwise be picked up by this module's processes, with
    this module's routing (a leftover story sent to the codex engine's scripted turns)."""
    e2e_redis.flush()


@pytest.fixture(scope="module")
def bot(world: World, e2e_redis: RedisServer, models: RunningModelServer) -> Iterator[Bot]:
    """Shared web + worker processes; tests use their own repos and issues."""
    running = new_bot(bot_env(world.testbed, world.app, e2e_redis.url, models.url))
    running.start_all()
    yield running
    running.stop()


@pytest.fixture
def default_script(models: RunningModelServer) -> Iterator[RunningModelServer]:
    models.set_script(DEFAULT_SCRIPT)
    yield models
    models.set_script(DEFAULT_SCRIPT)

"""Issue #12 end to end: a run's environment (an image from a real local registry, `setup:`)
prepared before any story, and every way it can fail said in the tracking comment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.models.harness import RunningModelServer
from testbed.registry import Registry, build_image
from testbed.waiting import wait_for as await_until
from tests.conftest import RedisServer
from tests.e2e.conftest import DEFAULT_SCRIPT
from tests.e2e.harness import Bot, World, await_run, bot_env, new_bot, tracking

PLAN: dict[str, Any] = {
    "summary": "One file.",
    "design_note": "At the root.",
    "stories": [
        {
            "id": "S1",
            "title": "Note file",
            "description": "Create note.txt.",
            "depends_on": [],
            "writes": ["note.txt"],
            "acceptance": ["note.txt exists"],
            # Only passes where setup ran (deps/) and in the image (its marker file).
            "tests": ["grep -q ready deps/state && test -f /etc/baro-image && test -f note.txt"],
            "tier": "light",
        }
    ],
}


def script(title: str) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": f"plan {title}",
                "match": {"system": "baro's planner", "first_user": title},
                "turns": [{"tool_calls": [{"name": "submit_plan", "arguments": PLAN}]}],
            },
            {
                "name": "S1",
                "match": {"first_user": "Implement story S1"},
                "turns": [
                    {
                        "tool_calls": [
                            {
                                "name": "editor",
                                "arguments": {
                                    "command": "create",
                                    "path": "note.txt",
                                    "file_text": "note\n",
                                },
                            }
                        ]
                    },
                    {"tool_calls": [{"name": "finish", "arguments": {"summary": "Noted."}}]},
                ],
            },
            *DEFAULT_SCRIPT["rules"],
        ]
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry().start()
    work = tmp_path_factory.mktemp("images")
    reg.push(build_image(work, files={"etc/baro-image": b"yes\n"}), "test/tools", "1")
    reg.push(build_image(work, shell=False, files={"app": b"static"}), "test/static", "1")
    yield reg
    reg.stop()


LATE = Registry()
"""Not started until the retry test needs it: first it is an unreachable registry."""


@pytest.fixture(scope="module")
def env_bot(
    world: World, e2e_redis: RedisServer, models: RunningModelServer, registry: Registry
) -> Iterator[Bot]:
    insecure = json.dumps([registry.host, LATE.host])
    running = new_bot(
        bot_env(
            world.testbed,
            world.app,
            e2e_redis.url,
            models.url,
            BARO_IMAGE_INSECURE_REGISTRIES=insecure,
        )
    )
    running.start_all(runners=1)
    yield running
    running.stop()
    LATE.stop()


def baro_yml(image: str, setup: str = "mkdir -p deps && echo ready > deps/state") -> str:
    return f"image: {image}\nsetup:\n  - '{setup}'\n"


async def start(world: World, bot: Bot, models: RunningModelServer, yml: str, title: str) -> Any:
    repo = world.new_repo({"README.md": "# x\n", ".github/baro.yml": yml})
    issue = world.new_issue(repo, title)
    models.set_script(script(title))
    await world.deliver_label(bot, repo, issue.number)
    return repo, issue


async def test_an_image_and_setup_serve_every_command_of_the_run(
    world: World, env_bot: Bot, models: RunningModelServer, registry: Registry
) -> None:
    image = f"{registry.host}/test/tools:1"
    repo, issue = await start(world, env_bot, models, baro_yml(image), "Note in the image")
    state = await await_run(world, env_bot, repo, issue.number)
    assert state["state"] == "done", json.dumps(state["stories"], default=str)[:3000]
    env = state["environment"]
    assert env["state"] == "ready" and env["digest"].startswith("sha256:")
    assert env["image"] == image and env["source"] == "baro.yml"
    assert env["setup_seconds"] is not None
    # What setup made is never committed; the story's file is.
    assert world.state.read_file(repo, state["branch"], "note.txt") == b"note\n"
    assert world.state.read_file(repo, state["branch"], "deps/state") is None
    comment = await await_until(
        lambda: (c := tracking(world, repo, issue.number)) and "/pull/" in c.body and c,
        20,
        "the final comment",
    )
    assert comment is not None
    pulls = world.state.pulls(repo)
    assert len(pulls) == 1


CASES = {
    "bad name": ("Registry/UPPER:1", "repository names must be lowercase"),
    "missing tag": ("{host}/test/tools:9", "has no tag '9' in test/tools"),
    "no shell": ("{host}/test/static:1", "has no shell (/bin/sh)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_an_unusable_image_ends_the_run_saying_why(
    world: World, env_bot: Bot, models: RunningModelServer, registry: Registry, case: str
) -> None:
    template, said = CASES[case]
    image = template.format(host=registry.host)
    repo, issue = await start(world, env_bot, models, baro_yml(image), f"Image case {case}")
    state = await await_run(world, env_bot, repo, issue.number)
    assert state["state"] == "failed"
    assert all(s["state"] == "pending" and s["attempts"] == 0 for s in state["stories"].values())
    body = await await_until(
        lambda: (
            (c := tracking(world, repo, issue.number))
            and "could not be prepared" in c.body
            and c.body
        ),
        20,
        "the failure in the tracking comment",
    )
    assert said in body, body
    assert f"image `{image}`" in body and "/baro retry" in body
    await await_until(
        lambda: world.state.labels(repo, issue.number) == ["baro", "baro:failed"],
        20,
        "the failed label",
    )


async def test_a_failed_setup_ends_the_run_with_its_output(
    world: World, env_bot: Bot, models: RunningModelServer, registry: Registry
) -> None:
    yml = baro_yml(
        f"{registry.host}/test/tools:1", "echo resolving deps; echo E404 left-pad >&2; exit 7"
    )
    repo, issue = await start(world, env_bot, models, yml, "Setup that fails")
    state = await await_run(world, env_bot, repo, issue.number)
    assert state["state"] == "failed" and state["environment"]["error_kind"] == "setup"
    body = await await_until(
        lambda: (
            (c := tracking(world, repo, issue.number))
            and "could not be prepared" in c.body
            and c.body
        ),
        20,
        "the setup output in the tracking comment",
    )
    assert "exited with 7" in body and "resolving deps\nE404 left-pad" in body
    assert "`setup:`" in body


async def test_an_unreachable_registry_fails_and_a_retry_works_once_it_is_back(
    world: World, env_bot: Bot, models: RunningModelServer, tmp_path: Path
) -> None:
    image = f"{LATE.host}/test/tools:1"
    repo, issue = await start(world, env_bot, models, baro_yml(image), "Registry comes back")
    state = await await_run(world, env_bot, repo, issue.number)
    assert state["state"] == "failed"
    body = await await_until(
        lambda: (c := tracking(world, repo, issue.number)) and "unreachable" in c.body and c.body,
        20,
        "the unreachable registry in the tracking comment",
    )
    assert f"registry {LATE.host} is unreachable" in body

    LATE.start()
    LATE.push(build_image(tmp_path, files={"etc/baro-image": b"yes\n"}), "test/tools", "1")
    await world.deliver_comment(env_bot, repo, issue.number, "/baro retry")
    state = await await_run(
        world, env_bot, repo, issue.number, check=lambda s: s["state"] == "done", what="retry"
    )
    assert state["environment"]["generation"] == 2 and state["environment"]["state"] == "ready"
    assert state["stories"]["S1"]["state"] == "landed"

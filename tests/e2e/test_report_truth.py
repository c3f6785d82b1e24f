"""The report tells the whole truth: every attempt's time, refused changes, whole transcripts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from app import keys
from testbed.models.harness import RunningModelServer
from tests.conftest import RedisServer
from tests.e2e.harness import Bot, World, bot_env, new_bot
from tests.e2e.scenario import Scenario


@pytest.fixture(scope="module")
def truth_bot(world: World, e2e_redis: RedisServer, models: RunningModelServer) -> Iterator[Bot]:
    running = new_bot(bot_env(world.testbed, world.app, e2e_redis.url, models.url))
    running.start_all(runners=2)
    yield running
    running.stop()


def call(name: str, latency: float = 0.0, **arguments: Any) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "tool_calls": [{"name": name, "arguments": arguments}],
        "usage": {"input": 700, "output": 50},
    }
    if latency:
        turn["latency"] = latency
    return turn


def create(path: str, text: str, latency: float = 0.0) -> dict[str, Any]:
    return call("editor", latency, command="create", path=path, file_text=text)


def finish(latency: float = 0.0) -> dict[str, Any]:
    return call("finish", latency, summary="Done.")


def story(sid: str, title: str, path: str, check: str) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title,
        "description": f"Write {path}.",
        "depends_on": [],
        "writes": [path],
        "acceptance": [f"{path} is right"],
        "tests": [check],
        "tier": "light",
    }


def start(
    world: World,
    models: RunningModelServer,
    stories: list[dict[str, Any]],
    agents: dict[str, list[dict[str, Any]]],
    files: dict[str, str | bytes] | None = None,
    first: list[dict[str, Any]] | None = None,
) -> Scenario:
    """A repository, an issue and a script: the plan, each story's agent, and `first`
    (rules that win over the agents', as the first matching rule does)."""
    s = Scenario.new(
        world,
        models,
        f"Truth {uuid.uuid4().hex[:6]}",
        {"README.md": "# x\n", ".github/baro.yml": "review: false\n", **(files or {})},
    )
    s.plans({"summary": "s", "design_note": "d", "stories": stories})
    titles = {story["id"]: story["title"] for story in stories}
    for sid, turns in agents.items():
        s.agent(sid, titles[sid], list(turns))
    return s.script(*(first or []))


async def test_every_attempt_counts_in_the_times_and_the_timeline(
    world: World, truth_bot: Bot, models: RunningModelServer
) -> None:
    t = uuid.uuid4().hex[:6]
    title = f"Right file {t}"
    s = start(
        world,
        models,
        [story("S1", title, "a.txt", "grep -q right a.txt")],
        # Attempt 1 never passes its test (finish, two repairs, red again); every model call
        # takes a second, so each attempt's time is visible.
        {"S1": [create("a.txt", "wrong\n", 1.0), finish(1.0), finish(1.0), finish(1.0)]},
        # Attempt 2's kickoff names the previous failure: it writes the right file.
        first=[
            {
                "name": f"S1 retry {t}",
                "match": {
                    "first_user": f"Implement story S1: {title}.*A previous attempt",
                },
                "turns": [create("a.txt", "right\n", 1.0), finish(1.0)],
            }
        ],
    )
    await s.label(truth_bot)

    state = await s.ended(truth_bot, timeout=120, what="the retried run")
    assert state["state"] == "done", state["stories"]
    record = state["stories"]["S1"]
    spans = record["spans"]
    assert [span["attempt"] for span in spans] == [1, 2]
    assert spans[0]["outcome"] == "verification" and spans[1]["outcome"] == "landed"
    first, second = (duration(span) for span in spans)
    assert first >= 4.0 and second >= 2.0  # four and two model calls of a second each
    body = world.state.pulls(s.repo)[0].issue.body or ""
    assert f"Right file {t} (attempt 1) :crit, s1a1" in body
    assert f"Right file {t} (attempt 2) :done, s1a2" in body
    sequential = body.split("sequential ", 1)[1].split(" ", 1)[0]
    assert seconds(sequential) >= int(first + second)  # not the last attempt's time only


async def test_refused_edits_go_back_to_the_agent_and_into_the_pr(
    world: World, truth_bot: Bot, models: RunningModelServer
) -> None:
    t = uuid.uuid4().hex[:6]
    s = start(
        world,
        models,
        [
            story("S1", f"Editor tries CI {t}", "a.txt", "test -f a.txt"),
            story("S2", f"Bash writes CI {t}", "b.txt", "test -f b.txt"),
        ],
        {
            "S1": [
                create(".github/workflows/ci.yml", "on: push\n"),
                create("a.txt", "a\n"),
                finish(),
            ],
            "S2": [
                call(
                    "bash",
                    command="mkdir -p .github/workflows && echo on > .github/workflows/ci.yml",
                ),
                create("b.txt", "b\n"),
                finish(),
                call("bash", command="rm -r .github/workflows"),
                finish(),
            ],
        },
    )
    await s.label(truth_bot)

    state = await s.ended(truth_bot, what="the run")
    assert state["state"] == "done", state["stories"]
    for sid in ("S1", "S2"):
        assert state["stories"][sid]["state"] == "landed"
        assert state["stories"][sid]["attempts"] == 1  # undone inside the attempt, no retry
        assert any(
            r.startswith(".github/workflows/ci.yml: ") for r in state["stories"][sid]["refusals"]
        )
    assert world.state.read_file(s.repo, state["branch"], ".github/workflows/ci.yml") is None
    body = world.state.pulls(s.repo)[0].issue.body or ""
    assert "## Refused changes" in body
    assert "**S1** .github/workflows/ci.yml: baro cannot push changes" in body
    assert "**S2** .github/workflows/ci.yml: baro's GitHub App has no workflows permission" in body


async def test_the_transcript_is_saved_after_landing_with_its_conflict_rounds(
    world: World, truth_bot: Bot, models: RunningModelServer
) -> None:
    t = uuid.uuid4().hex[:6]
    s = start(
        world,
        models,
        [
            story("S1", f"First line {t}", "a.py", "grep -q first a.py"),
            story("S2", f"Second line {t}", "a.py", "grep -q second a.py"),
        ],
        {
            "S1": [create("a.py", "x = 'first'\n"), finish()],
            # S2 finishes later, so it meets S1's line and resolves the conflict.
            "S2": [
                create("a.py", "x = 'second'\n", 2.0),
                finish(),
                create("a.py", "x = 'first'\ny = 'second'\n"),
                finish(),
            ],
        },
        files={"a.py": "x = 0\n"},
    )
    await s.label(truth_bot)

    state = await s.ended(truth_bot, what="the run")
    assert state["state"] == "done", state["stories"]
    assert world.state.read_file(s.repo, state["branch"], "a.py") == b"x = 'first'\ny = 'second'\n"
    client = Redis.from_url(truth_bot.env["BARO_REDIS_URL"])
    try:
        raw = client.get(keys.transcript(state["id"], "S2", 1))
    finally:
        client.close()
    assert raw is not None
    transcript = json.loads(raw)
    text = json.dumps(transcript)
    assert "These files now hold conflict markers: a.py" in text
    assert "y = 'second'" in text  # the resolution, made after the first landing attempt


def duration(span: dict[str, Any]) -> float:
    from datetime import datetime

    start, end = (datetime.fromisoformat(span[k]) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds()


def seconds(text: str) -> int:
    """`1m05s` or `7s` → seconds."""
    minutes, _, rest = text.rpartition("m")
    return int(minutes or 0) * 60 + int(rest.rstrip("s") or 0)

"""The issue's log contract on a full run through real web, worker and runner processes:
every line is JSON, lines say which run/story/delivery they belong to, and none carries a
secret the run used (webhook secret, App key, model key, installation tokens)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.models.harness import RunningModelServer
from tests.conftest import RedisServer
from tests.e2e.harness import PLANNER_KEY, World, bot_env, new_bot
from tests.e2e.scenario import Scenario
from tests.e2e.test_execution import greeting_rules

MIN_SECRET_LENGTH = 8  # app.logs does not redact shorter values by value; nor do we look


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: the session's queue may still hold other tests' story
    jobs, which these runners would pick up (correctly logged under their own runs)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def parse(name: str, text: str) -> list[dict[str, Any]]:
    """Every non-empty line of a process's log as JSON, or a failure naming the line."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise AssertionError(f"{name}.log line {number} is not JSON: {raw[:300]}") from None
        assert isinstance(line, dict), raw
        assert {"ts", "level", "logger", "msg", "process"} <= set(line), raw
        assert line["process"] == name.split("-", 1)[0], raw
        lines.append(line)
    return lines


async def test_a_run_logs_json_with_context_and_no_secrets(
    world: World, own_redis: RedisServer, models: RunningModelServer
) -> None:
    tokens_before = set(world.state.tokens)
    bot = new_bot(
        bot_env(world.testbed, world.app, own_redis.url, models.url, BARO_LOG_FORMAT="json")
    )
    try:
        bot.start_all(runners=2)
        s = Scenario.new(world, models, "Log the greeting", {"README.md": "# Logs\n"})
        s.rule(*greeting_rules(s.title)).script()
        repo = s.repo
        delivery = str(uuid.uuid4())
        response = await s.label(bot, delivery_id=delivery)
        assert response.status_code == 202, response.text
        state = await s.ended(bot, what="the run to finish")
        assert state["state"] == "done", state["stories"]
    finally:
        names = sorted(bot.procs)
        bot.stop()  # their shutdown lines are checked too
    run_id = state["id"]
    logs = {name: bot.logs(name) for name in names}
    lines = {name: parse(name, text) for name, text in logs.items()}

    web = lines["web"]
    queued = [x for x in web if x["msg"].startswith("queued issues delivery")]
    assert len(queued) == 1, web
    assert queued[0]["delivery"] == delivery and queued[0]["event"] == "issues"
    assert queued[0]["installation"] == world.installation.id

    worker = lines["worker"]
    handled = [x for x in worker if x["msg"] == "trigger handled"]
    assert len(handled) == 1, worker
    assert handled[0]["delivery"] == delivery and handled[0]["run"] == run_id
    assert handled[0]["installation"] == world.installation.id
    assert handled[0]["repo"] == repo.full_name
    assert handled[0]["job"] == f"trigger:{delivery}"
    # arq logs a job's start and end outside the job itself, so without our context.
    about_run = [x for x in worker if run_id in x["msg"] and not x["logger"].startswith("arq.")]
    assert len(about_run) >= 2, worker  # at least "run … queued" and "plan_run …: planned"
    assert all(x.get("run") == run_id for x in about_run), about_run

    runner = [x for name in names if name.startswith("runner") for x in lines[name]]
    finished = [x for x in runner if x["msg"].startswith(f"run_story {run_id}/")]
    assert sorted(x["story"] for x in finished) == ["S1", "S2", "S3"], finished
    for line in finished:
        assert line["run"] == run_id and line["attempt"] == 1
        assert line["job"] == f"story:{run_id}:{line['story']}:1"
    # A library's lines inside a story carry the context too: httpx's model requests.
    model_calls = [x for x in runner if x["logger"] == "httpx" and "/chat/completions" in x["msg"]]
    assert len(model_calls) >= 6, runner  # two turns per story
    assert all(x.get("run") == run_id and x.get("story") for x in model_calls), model_calls

    tokens = set(world.state.tokens)
    assert tokens - tokens_before, "the run minted no installation token: nothing was checked"
    pem_body = [
        line
        for line in world.app.private_key_pem.splitlines()
        if not line.startswith("-----") and len(line) >= MIN_SECRET_LENGTH
    ]
    secrets = {
        "webhook secret": world.app.webhook_secret,
        "model key": PLANNER_KEY,
        **{f"private key line {i}": line for i, line in enumerate(pem_body)},
        **{f"installation token {t[:8]}…": t for t in tokens},
    }
    everything = "\n".join(logs.values())
    assert run_id in everything and delivery in everything  # the grep sees real content
    leaked = [name for name, value in secrets.items() if value in everything]
    assert leaked == []

"""`GET /metrics` after a full run through real web, worker and runner processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.conftest import RedisServer
from tests.e2e.harness import PLANNER_MODEL, Bot, World, bot_env, new_bot
from tests.e2e.scenario import Scenario
from tests.e2e.test_execution import PLAN, greeting_rules

RUNNERS = 2
TOKEN = "e2e-metrics-token-42"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this module's own, so every count below comes from this one run."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def metrics_bot(world: World, own_redis: RedisServer, models: RunningModelServer) -> Iterator[Bot]:
    env = bot_env(world.testbed, world.app, own_redis.url, models.url, BARO_METRICS_TOKEN=TOKEN)
    running = new_bot(env)
    try:
        running.start_all()
        for i in range(RUNNERS):  # after the web process: a loaded machine starts it sooner
            running.start(f"runner-{i}")
        yield running
    finally:
        running.stop()


def scrape(bot: Bot) -> Samples:
    response = httpx.get(
        bot.web_url + "/metrics", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, pairs), value in samples.items()
        if sample == name and labels.items() <= dict(pairs).items()
    )


async def test_a_run_shows_up_in_metrics(
    world: World, metrics_bot: Bot, models: RunningModelServer
) -> None:
    assert httpx.get(metrics_bot.web_url + "/metrics", timeout=10).status_code == 401
    runners = await wait_for(
        lambda: (got := scrape(metrics_bot))[("baro_runners", ())] == RUNNERS and got,
        60,
        "every runner to announce itself",
    )
    assert runners[("baro_runner_slots", ())] == RUNNERS * 2  # BARO_RUNNER_CONCURRENCY
    assert runners[("baro_runners_busy", ())] == 0

    s = Scenario.new(world, models, "Count the greetings", {"README.md": "# Metrics\n"})
    s.rule(*greeting_rules(s.title)).script()
    await s.label(metrics_bot)
    state = await s.ended(metrics_bot, what="the run to finish")
    assert state["state"] == "done", state["stories"]
    stories = len(PLAN["stories"])

    # The final write's metrics follow its CAS by a moment.
    got = await wait_for(
        lambda: (
            (s := scrape(metrics_bot))
            and total(s, "baro_runs_finished_total", state="done") == 1
            and s
        ),
        20,
        "the finished run in the metrics",
    )
    assert total(got, "baro_webhook_deliveries_total", event="issues", outcome="queued") >= 1
    assert total(got, "baro_stories_total", outcome="landed") == stories
    assert total(got, "baro_stories_total") == stories  # nothing else ended
    assert total(got, "baro_story_duration_seconds_count", outcome="landed") == stories
    assert total(got, "baro_story_duration_seconds_sum") > 0
    assert total(got, "baro_story_queue_wait_seconds_count", tier="light") == stories
    assert total(got, "baro_story_retries_total") == 0

    model = PLANNER_MODEL["name"]
    for kind in ("input", "cached", "output"):
        assert total(got, "baro_model_tokens_total", model=model, kind=kind) > 0, kind
    assert total(got, "baro_model_cost_dollars_total", model=model) > 0
    assert total(got, "baro_model_calls_unpriced_total") == 0
    # One planner call plus two calls per story (see the script).
    assert total(got, "baro_model_calls_total", model=model) == 1 + 2 * stories

    installation = str(world.installation.id)
    assert total(got, "baro_github_rate_limit_remaining", installation=installation) > 0
    assert got[("baro_runners", ())] == RUNNERS
    assert total(got, "baro_runs") == 0  # every state's gauge is back to zero

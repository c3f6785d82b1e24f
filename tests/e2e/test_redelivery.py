"""A trigger lost to an outage comes back: the worker's reconciler asks GitHub to redeliver it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.conftest import RedisServer
from tests.e2e.harness import World, bot_env, new_bot, run_state

pytestmark = pytest.mark.usefixtures("default_script")


def tracking_comments(world: World, repo: Any, number: int) -> list[Any]:
    return [c for c in world.bot_comments(repo, number) if "<!-- baro:run:" in c.body]


async def test_trigger_answered_503_is_redelivered_and_runs_once(
    world: World, models: RunningModelServer
) -> None:
    # An App of its own: its delivery log holds only this test's deliveries.
    state = world.state
    app = state.create_app(f"redeliver-{uuid.uuid4().hex[:8]}")
    owner = f"redeliver-org-{uuid.uuid4().hex[:6]}"
    mine = World(world.testbed, app, state.create_installation(app, owner), owner=owner)
    redis = RedisServer()
    redis.start()
    bot = new_bot(
        bot_env(world.testbed, app, redis.url, models.url, BARO_REDELIVERY_INTERVAL_SECONDS="1")
    )
    bot.start_all()

    def app_requests(method: str, path: str) -> int:
        log = state.request_log(method, path)
        return sum(1 for r in log if r.auth == f"app:{app.id}")

    try:
        repo = mine.new_repo()
        answered_issue = mine.new_issue(repo, "Answered at once")
        answered = await mine.deliver_label(bot, repo, answered_issue.number)
        assert answered.status_code == 202, answered.text
        await wait_for(
            lambda: tracking_comments(mine, repo, answered_issue.number), 30, "first run"
        )

        issue = mine.new_issue(repo, "Labelled during the outage")
        redis.stop()
        lost = await mine.deliver_label(bot, repo, issue.number)
        assert lost.status_code == 503
        guid = lost.request.headers["X-GitHub-Delivery"]
        (failed,) = state.hooks.attempts(guid)
        assert (failed.status_code, failed.status) == (503, "Invalid HTTP Response: 503")

        redis.start()
        try:
            attempts = await wait_for(
                lambda: len(a := state.hooks.attempts(guid)) >= 2 and a, 60, "a redelivery"
            )
            comments = await wait_for(
                lambda: tracking_comments(mine, repo, issue.number), 30, "the run's comment"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{bot.logs()[-15000:]}") from None
        again = attempts[1]
        assert (again.redelivery, again.status, again.status_code) == (True, "OK", 202)
        assert again.body == failed.body
        assert run_state(redis.url, comments[0].body)["delivery_id"] == guid

        # Later passes (every second) leave both events alone.
        listed = app_requests("GET", r"^/app/hook/deliveries$")
        await wait_for(
            lambda: app_requests("GET", r"^/app/hook/deliveries$") >= listed + 3, 30, "passes"
        )
        await asyncio.sleep(0.5)
        assert len(state.hooks.attempts(guid)) == 2
        assert len(state.hooks.attempts(answered.request.headers["X-GitHub-Delivery"])) == 1
        assert app_requests("POST", r"^/app/hook/deliveries/\d+/attempts$") == 1
        assert len(tracking_comments(mine, repo, issue.number)) == 1
    finally:
        bot.stop()
        redis.stop()

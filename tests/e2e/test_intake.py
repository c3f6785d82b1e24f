"""Issue #2's acceptance tests: a signed delivery becomes an acknowledged, queued run."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import httpx
import pytest

from testbed.github.delivery import github_headers, issue_labeled_payload, sign
from testbed.github.entities import RequestRecord
from testbed.github.gitops import branch_ahead
from testbed.waiting import wait_for, wait_until
from tests.conftest import FIXTURES, RedisServer
from tests.e2e.harness import Bot, World, bot_env, new_bot

pytestmark = pytest.mark.usefixtures("default_script")


def tracking_comments(world: World, repo: object, number: int) -> list[object]:
    return [c for c in world.bot_comments(repo, number) if "<!-- baro:run:" in c.body]  # type: ignore[arg-type]


async def test_label_delivery_posts_one_tracking_comment(world: World, bot: Bot) -> None:
    repo = world.new_repo()
    issue = world.new_issue(repo)
    resp = await world.deliver_label(bot, repo, issue.number)
    assert resp.status_code == 202, resp.text

    comments = await wait_for(
        lambda: tracking_comments(world, repo, issue.number), what="tracking comment"
    )
    assert len(comments) == 1
    assert world.state.reactions(repo, issue_number=issue.number) == []  # the comment answers


async def test_same_delivery_twice_gives_one_comment_and_one_run(world: World, bot: Bot) -> None:
    repo = world.new_repo()
    issue = world.new_issue(repo)
    delivery = str(uuid.uuid4())
    first = await world.deliver_label(bot, repo, issue.number, delivery_id=delivery)
    second = await world.deliver_label(bot, repo, issue.number, delivery_id=delivery)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == {"duplicate": delivery}
    await wait_for(lambda: tracking_comments(world, repo, issue.number), what="tracking comment")
    # A new delivery id for the same label (GitHub sends one per label event) → one active run.
    third = await world.deliver_label(bot, repo, issue.number)
    assert third.status_code == 202
    await wait_for(
        lambda: len(world.bot_comments(repo, issue.number)) >= 2, what="already-running reply"
    )
    assert len(tracking_comments(world, repo, issue.number)) == 1


async def test_forged_missing_and_oversized_deliveries_are_refused(world: World, bot: Bot) -> None:
    repo = world.new_repo()
    issue = world.new_issue(repo)
    payload = issue_labeled_payload(
        world.state, repo, issue.number, "baro", world.maintainer, world.installation.id
    )
    body = json.dumps(payload).encode()
    url = bot.web_url + "/webhooks/github"
    async with httpx.AsyncClient() as client:
        forged = await client.post(
            url, content=body, headers=github_headers("issues", None, sign("wrong-secret", body))
        )
        missing = await client.post(url, content=body, headers=github_headers("issues"))
        huge = b"{" + b" " * (26 * 1024 * 1024) + b"}"
        oversized = await client.post(
            url,
            content=huge,
            headers=github_headers("issues", None, sign(world.app.webhook_secret, huge)),
        )
        no_event = await client.post(
            url,
            content=body,
            headers={"X-Hub-Signature-256": sign(world.app.webhook_secret, body)},
        )
    assert (forged.status_code, forged.content) == (401, b"")
    assert (missing.status_code, missing.content) == (401, b"")
    assert oversized.status_code == 413
    assert no_event.status_code == 400
    assert world.bot_comments(repo, issue.number) == []
    assert world.state.reactions(repo, issue_number=issue.number) == []


async def test_reader_gets_one_polite_reply_and_no_run(world: World, bot: Bot) -> None:
    repo = world.new_repo()
    world.state.set_permission(repo, "reader", "read")
    issue = world.new_issue(repo)
    resp = await world.deliver_comment(bot, repo, issue.number, "/baro", commenter="reader")
    assert resp.status_code == 202
    replies = await wait_for(lambda: world.bot_comments(repo, issue.number), what="reply")
    assert len(replies) == 1
    assert "only starts for people with write access" in replies[0].body
    assert "@reader" in replies[0].body
    assert tracking_comments(world, repo, issue.number) == []
    # A triager can add labels without write access: the labelling sender is checked.
    world.state.set_permission(repo, "triager", "triage")
    await world.deliver_label(bot, repo, issue.number, sender="triager")
    await wait_for(lambda: len(world.bot_comments(repo, issue.number)) == 2, what="second reply")
    assert tracking_comments(world, repo, issue.number) == []


async def test_comment_by_the_app_itself_is_ignored(world: World, bot: Bot) -> None:
    repo = world.new_repo()
    issue = world.new_issue(repo)
    resp = await world.deliver_comment(bot, repo, issue.number, "/baro", commenter=world.app)
    assert resp.status_code == 202
    assert "ignored" in resp.json()
    # A marker delivery afterwards proves the worker is alive and processed the queue.
    await world.deliver_comment(bot, repo, issue.number, "/baro help")
    await wait_for(lambda: len(world.bot_comments(repo, issue.number)) == 2, what="help reply")
    assert tracking_comments(world, repo, issue.number) == []


async def test_every_fixture_payload_is_answered_without_5xx(world: World, bot: Bot) -> None:
    paths = sorted(Path(FIXTURES).glob("*/*.json"))
    assert len(paths) > 250
    async with httpx.AsyncClient(timeout=10) as client:
        for path in paths:
            body = path.read_bytes()
            headers = github_headers(path.parent.name, None, sign(world.app.webhook_secret, body))
            resp = await client.post(
                bot.web_url + "/webhooks/github", content=body, headers=headers
            )
            assert resp.status_code < 500, (path, resp.status_code, resp.text)


async def test_malformed_signed_payloads_are_400(world: World, bot: Bot) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        deep = b'{"action": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
        for body in (b"not json", b"[]", b'{"issue": "x", "sender": 1, "repository": {}}', deep):
            headers = github_headers("issues", None, sign(world.app.webhook_secret, body))
            resp = await client.post(
                bot.web_url + "/webhooks/github", content=body, headers=headers
            )
            assert resp.status_code == 400, body


async def test_ping_and_ignored_events(world: World, bot: Bot) -> None:
    ping = json.loads((FIXTURES / "ping" / "payload.json").read_text())
    resp = await world.post(bot, "ping", ping)
    assert resp.status_code == 200
    labeled = json.loads((FIXTURES / "issues" / "labeled.payload.json").read_text())
    other = copy.deepcopy(labeled)
    other["label"]["name"] = "bug"
    resp = await world.post(bot, "issues", other)
    assert resp.status_code == 202 and "ignored" in resp.json()


async def test_secondary_rate_limit_on_comment_creation_is_waited_out(
    world: World, bot: Bot
) -> None:
    repo = world.new_repo()
    issue = world.new_issue(repo)
    fault = world.state.faults.secondary_rate_limit(
        method="POST", path=rf"/repos/.*/{repo.name}/issues/{issue.number}/comments$", retry_after=1
    )
    await world.deliver_label(bot, repo, issue.number)
    await wait_for(lambda: tracking_comments(world, repo, issue.number), what="tracking comment")

    def comment_posts() -> list[RequestRecord]:
        return world.state.request_log(
            method="POST", path=rf"/{repo.name}/issues/{issue.number}/comments$"
        )

    # The comment exists before its request is logged (the log is written after the
    # response), so wait for the log rather than read it once.
    await wait_for(lambda: len(comment_posts()) >= 2, what="both comment requests logged")
    log = comment_posts()
    statuses = [r.status for r in log]
    assert statuses[:2] == [403, 201], statuses
    assert log[1].started - log[0].started >= 0.9
    assert len(tracking_comments(world, repo, issue.number)) == 1
    del fault


async def test_redis_outage_gives_503_then_recovers(
    world: World, models: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    redis = RedisServer()
    redis.start()
    running = new_bot(bot_env(world.testbed, world.app, redis.url, models.url))  # type: ignore[attr-defined]
    running.start_all()
    try:
        repo = world.new_repo()
        issue = world.new_issue(repo)
        redis.stop()
        resp = await world.deliver_label(running, repo, issue.number)
        assert resp.status_code == 503
        assert "redeliver" in resp.json()["error"]
        health = httpx.get(running.web_url + "/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"

        redis.start()
        await wait_for(
            lambda: httpx.get(running.web_url + "/healthz").status_code == 200, what="healthy"
        )
        # GitHub redelivers with the same id: it must be processed now, not deduplicated.
        delivery = resp.request.headers["X-GitHub-Delivery"]
        again = await world.deliver_label(running, repo, issue.number, delivery_id=delivery)
        assert again.status_code == 202
        try:
            await wait_for(lambda: tracking_comments(world, repo, issue.number), 30, what="comment")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{running.logs()}") from None
    finally:
        running.stop()
        redis.stop()


async def test_run_trigger_on_a_pull_request_explains_instead_of_planning(
    world: World, bot: Bot
) -> None:
    repo = world.new_repo()
    branch_ahead(repo.git_dir, "feature")
    pull = world.state.create_pull(repo, title="A PR", head="feature", base="main")
    resp = await world.deliver_comment(bot, repo, pull.number, "/baro make it faster")
    assert resp.status_code == 202
    replies = await wait_for(lambda: world.bot_comments(repo, pull.number), what="reply")
    assert "starts runs from issues" in replies[0].body
    assert tracking_comments(world, repo, pull.number) == []


def test_healthz_reports_queue_heartbeats(bot: Bot) -> None:
    health = wait_until(
        lambda: (
            (h := httpx.get(bot.web_url + "/healthz").json())["worker"].find("j_complete") >= 0
            and h
        ),
        20,
        "the worker's heartbeat",
    )
    assert health["redis"] == "ok"
    assert 0 <= health["worker_heartbeat_age_s"] <= 11
    # This bot runs no runner process: reported, not fatal for the web process.
    assert health["status"] == "degraded"
    assert health["runner"].startswith("no heartbeat")
    assert health["runner_heartbeat_age_s"] is None

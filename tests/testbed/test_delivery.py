"""Webhook signing, headers and payload builders (payloads parse with githubkit)."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import httpx
from githubkit.webhooks import parse, verify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from testbed.github import delivery
from testbed.github.delivery import sign
from tests.testbed.conftest import World


def test_sign_vector() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign("It's a Secret to Everybody", b"Hello, World!") == expected


def test_headers() -> None:
    headers = delivery.github_headers("issues", signature="sha256=x", target_id=7)
    assert headers["X-GitHub-Event"] == "issues"
    assert len(headers["X-GitHub-Delivery"]) == 36
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert headers["X-GitHub-Hook-Installation-Target-Type"] == "integration"
    assert headers["X-GitHub-Hook-Installation-Target-ID"] == "7"
    assert headers["X-Hub-Signature-256"] == "sha256=x"


def test_fixture_dir_default() -> None:
    assert delivery.default_fixtures_dir().is_dir()
    assert (delivery.default_fixtures_dir() / "issue_comment").is_dir()


def test_payload_builders_match_state(world: World) -> None:
    state, repo = world.state, world.repo
    issue = state.create_issue(repo, "Build it", "Body", "alice")
    labeled = delivery.issue_labeled_payload(
        state, repo, issue.number, "baro", "alice", world.installation.id
    )
    event = parse("issues", json.dumps(labeled))
    assert event.action == "labeled"
    assert event.repository.full_name == "acme/widgets"
    assert event.repository.id == repo.id
    assert event.issue.number == issue.number
    assert event.label.name == "baro"
    assert event.sender.login == "alice"
    assert event.installation.id == world.installation.id
    assert "organization" not in labeled
    assert state.labels(repo, issue.number) == ["baro"]

    created = delivery.issue_comment_created_payload(
        state, repo, issue.number, "/baro go", "alice", world.installation.id
    )
    comment_event = parse("issue_comment", json.dumps(created))
    assert comment_event.action == "created"
    assert comment_event.comment.body == "/baro go"
    assert comment_event.comment.user.login == "alice"
    assert comment_event.comment.performed_via_github_app is None
    assert [c.id for c in state.comments(repo, issue.number)] == [comment_event.comment.id]

    own = delivery.issue_comment_created_payload(
        state, repo, issue.number, "status", world.app, world.installation.id
    )
    own_event = parse("issue_comment", json.dumps(own))
    assert own_event.sender.login == "baro-bot[bot]"
    assert own_event.comment.performed_via_github_app.id == world.app.id


def test_custom_fixtures_dir(world: World, tmp_path: Path) -> None:
    (tmp_path / "issues").mkdir()
    source = delivery.default_fixtures_dir() / "issues" / "labeled.payload.json"
    (tmp_path / "issues" / "labeled.payload.json").write_text(source.read_text())
    issue = world.state.create_issue(world.repo, "x", "", "alice")
    payload = delivery.issue_labeled_payload(
        world.state, world.repo, issue.number, "bug", "alice", 1, fixtures_dir=tmp_path
    )
    assert payload["label"]["name"] == "bug"


async def test_deliver_signs_body() -> None:
    received: dict[str, object] = {}

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        received["valid"] = verify("s3cret", body, request.headers["x-hub-signature-256"])
        received["sha1"] = hmac.compare_digest(
            request.headers["x-hub-signature"], delivery.sign_sha1("s3cret", body)
        )
        received["event"] = request.headers["x-github-event"]
        received["delivery"] = request.headers["x-github-delivery"]
        return JSONResponse({"ok": True}, status_code=202)

    app = Starlette(routes=[Route("/webhook", hook, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        response = await delivery.deliver(
            client, "http://bot/webhook", "ping", {"zen": "Keep it simple"}, "s3cret", "abc-123"
        )
    assert response.status_code == 202
    assert received == {"valid": True, "sha1": True, "event": "ping", "delivery": "abc-123"}

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.core.triggers import Trigger
from app.web.webhooks import BotIdentity, Ignored, MalformedPayload, route, signature_valid
from tests.conftest import FIXTURES

BOT = BotIdentity(app_id=4242, slug="baro-test", trigger_label="baro")


def load(event: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / event / name).read_text())
    return data


def labeled(label: str = "baro") -> dict[str, Any]:
    payload = copy.deepcopy(load("issues", "labeled.payload.json"))
    payload["label"]["name"] = label
    payload["installation"] = {"id": 77, "node_id": "x"}
    return payload


def commented(body: str) -> dict[str, Any]:
    payload = copy.deepcopy(load("issue_comment", "created.payload.json"))
    payload["comment"]["body"] = body
    payload["installation"] = {"id": 77, "node_id": "x"}
    return payload


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_signature_test_vector() -> None:
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_valid(b"It's a Secret to Everybody", b"Hello, World!", header)
    assert not signature_valid(b"It's a Secret to Everybody", b"Hello, World?", header)
    assert not signature_valid(b"other", b"Hello, World!", header)
    assert not signature_valid(b"s", b"body", None)
    assert not signature_valid(b"s", b"body", "sha1=abc")
    assert not signature_valid(b"s", b"body", "sha256=")


def test_label_trigger() -> None:
    payload = labeled()
    outcome = route("issues", "d1", encode(payload), BOT)
    assert isinstance(outcome, Trigger)
    assert outcome.kind == "label"
    assert outcome.installation_id == 77
    assert outcome.issue_number == payload["issue"]["number"]
    assert outcome.owner == payload["repository"]["owner"]["login"]
    assert outcome.sender_login == payload["sender"]["login"]
    assert outcome.comment_id is None


def test_label_is_case_insensitive_and_others_ignored() -> None:
    assert isinstance(route("issues", "d", encode(labeled("BARO")), BOT), Trigger)
    assert isinstance(route("issues", "d", encode(labeled("bug")), BOT), Ignored)


def test_comment_trigger_carries_command() -> None:
    outcome = route("issue_comment", "d2", encode(commented("/baro retry S2")), BOT)
    assert isinstance(outcome, Trigger)
    assert (outcome.kind, outcome.verb, outcome.stories) == ("comment", "retry", ("S2",))
    assert outcome.comment_id is not None


def test_bad_command_becomes_an_invalid_trigger() -> None:
    outcome = route("issue_comment", "d", encode(commented("/baro retry everything")), BOT)
    assert isinstance(outcome, Trigger)
    assert outcome.verb == "invalid" and outcome.command_error


def test_non_command_comment_ignored() -> None:
    assert isinstance(route("issue_comment", "d", encode(commented("nice work")), BOT), Ignored)


def test_own_events_and_bots_ignored() -> None:
    mine = commented("/baro")
    mine["sender"]["login"] = "baro-test[bot]"
    assert isinstance(route("issue_comment", "d", encode(mine), BOT), Ignored)
    via_app = commented("/baro")
    via_app["comment"]["performed_via_github_app"] = {"id": 4242}
    assert isinstance(route("issue_comment", "d", encode(via_app), BOT), Ignored)
    other_bot = commented("/baro")
    other_bot["sender"]["type"] = "Bot"
    other_bot["sender"]["login"] = "dependabot[bot]"
    assert isinstance(route("issue_comment", "d", encode(other_bot), BOT), Ignored)


def test_edited_and_deleted_comments_ignored() -> None:
    for name in ("edited.payload.json", "deleted.payload.json"):
        payload = copy.deepcopy(load("issue_comment", name))
        payload["comment"]["body"] = "/baro"
        payload["installation"] = {"id": 1}
        assert isinstance(route("issue_comment", "d", encode(payload), BOT), Ignored)


def test_without_installation_ignored() -> None:
    payload = labeled()
    del payload["installation"]
    assert isinstance(route("issues", "d", encode(payload), BOT), Ignored)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"sender": "x", "repository": 3}',
        b"\xff\xfe",
        b'"str"',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"sender": ' + b"[" * 100_000,
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        route("issues", "d", body, BOT)


def reviewed(event: str, name: str, body: str | None) -> dict[str, Any]:
    payload = copy.deepcopy(load(event, name))
    payload["review" if event == "pull_request_review" else "comment"]["body"] = body
    payload["installation"] = {"id": 77, "node_id": "x"}
    return payload


def test_review_and_review_comment_commands_are_pull_request_triggers() -> None:
    review = reviewed("pull_request_review", "submitted.payload.json", "/baro rename foo to bar")
    outcome = route("pull_request_review", "d", encode(review), BOT)
    assert isinstance(outcome, Trigger)
    assert (outcome.kind, outcome.verb, outcome.is_pull_request) == ("comment", "run", True)
    assert outcome.issue_number == review["pull_request"]["number"]
    assert outcome.issue_title == review["pull_request"]["title"]
    assert outcome.instructions == "rename foo to bar"
    assert outcome.comment_id is None  # a review cannot take an issue-comment reaction

    inline = reviewed(
        "pull_request_review_comment", "created.payload.json", "/baro use a constant here"
    )
    outcome = route("pull_request_review_comment", "d", encode(inline), BOT)
    assert isinstance(outcome, Trigger) and outcome.is_pull_request
    assert outcome.instructions == "use a constant here\n\n(Review comment on README.md, line 265.)"
    assert outcome.comment_id is None
    status = reviewed("pull_request_review_comment", "created.payload.json", "/baro status")
    outcome = route("pull_request_review_comment", "d", encode(status), BOT)
    assert isinstance(outcome, Trigger) and (outcome.verb, outcome.instructions) == ("status", "")


def test_reviews_without_a_command_or_of_other_actions_are_ignored() -> None:
    for body in (None, "LGTM", "looks good /baro"):
        plain = reviewed("pull_request_review", "submitted.payload.json", body)
        assert isinstance(route("pull_request_review", "d", encode(plain), BOT), Ignored)
    dismissed = reviewed("pull_request_review", "dismissed.payload.json", "/baro go")
    assert isinstance(route("pull_request_review", "d", encode(dismissed), BOT), Ignored)
    edited = reviewed("pull_request_review_comment", "edited.payload.json", "/baro go")
    assert isinstance(route("pull_request_review_comment", "d", encode(edited), BOT), Ignored)
    mine = reviewed("pull_request_review", "submitted.payload.json", "/baro go")
    mine["sender"]["login"] = "baro-test[bot]"
    assert isinstance(route("pull_request_review", "d", encode(mine), BOT), Ignored)
    headless = reviewed("pull_request_review", "submitted.payload.json", "/baro go")
    del headless["pull_request"]
    assert isinstance(route("pull_request_review", "d", encode(headless), BOT), Ignored)


def test_other_events_ignored_without_parsing() -> None:
    assert isinstance(route("push", "d", b"garbage", BOT), Ignored)


def test_every_fixture_routes_without_error() -> None:
    for path in sorted(Path(FIXTURES).glob("*/*.json")):
        event = path.parent.name
        outcome = route(event, "d", path.read_bytes(), BOT)
        assert isinstance(outcome, Trigger | Ignored), path

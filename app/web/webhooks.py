"""Webhook deliveries → Triggers (pure): signature check and event routing.

Only the few fields the bot reads are parsed, leniently, so that new fields or actions that
GitHub adds never turn a delivery into an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from app.core.commands import Command, CommandError, parse_command
from app.core.triggers import Trigger


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256` check in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _User(_Lenient):
    login: str
    id: int
    type: str = "User"


class _Repo(_Lenient):
    name: str
    full_name: str
    owner: _User


class _Issue(_Lenient):
    number: int
    title: str = ""
    pull_request: dict[str, Any] | None = None


class _Label(_Lenient):
    name: str


class _App(_Lenient):
    id: int


class _Comment(_Lenient):
    id: int
    body: str | None = None
    performed_via_github_app: _App | None = None
    path: str | None = None
    """Set on a review comment: the file it is attached to (with `line`)."""
    line: int | None = None


class _PullRequest(_Lenient):
    number: int
    title: str = ""


class _Review(_Lenient):
    id: int
    body: str | None = None


class _Installation(_Lenient):
    id: int


class _Envelope(_Lenient):
    action: str | None = None
    sender: _User | None = None
    repository: _Repo | None = None
    installation: _Installation | None = None
    issue: _Issue | None = None
    label: _Label | None = None
    comment: _Comment | None = None
    pull_request: _PullRequest | None = None
    review: _Review | None = None


@dataclass(frozen=True)
class Ignored:
    reason: str


class MalformedPayload(ValueError):
    """The body is not the JSON object that the event promises."""


@dataclass(frozen=True)
class BotIdentity:
    app_id: int
    slug: str
    trigger_label: str

    @property
    def login(self) -> str:
        return f"{self.slug}[bot]"


REVIEW_EVENTS = frozenset({"pull_request_review", "pull_request_review_comment"})
"""`/baro <instructions>` in a review or a review comment on baro's PR: a follow-up."""
HANDLED_EVENTS = frozenset({"issues", "issue_comment"}) | REVIEW_EVENTS


def route(event: str, delivery_id: str, body: bytes, bot: BotIdentity) -> Trigger | Ignored:
    """Decide what a (verified) delivery means. Raises MalformedPayload for a broken body."""
    if event not in HANDLED_EVENTS:
        return Ignored(f"event {event} is not handled")
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(f"body is not JSON: {exc}") from None
    except RecursionError:  # nesting deeper than the parser's stack: not a GitHub payload
        raise MalformedPayload("body is not JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise MalformedPayload("body is not a JSON object")
    try:
        env = _Envelope.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedPayload(f"unexpected payload at {where}: {first['msg']}") from None

    on_pull = event in REVIEW_EVENTS
    target = env.pull_request if on_pull else env.issue
    if env.sender is None or env.repository is None or target is None:
        return Ignored("payload has no sender, repository or issue")
    if env.installation is None:
        return Ignored("delivery is not for an App installation")
    if env.sender.login == bot.login:
        return Ignored("the App's own event")
    if env.sender.type == "Bot":
        return Ignored(f"event from another bot ({env.sender.login})")

    base = {
        "delivery_id": delivery_id,
        "installation_id": env.installation.id,
        "owner": env.repository.owner.login,
        "repo": env.repository.name,
        "issue_number": target.number,
        "issue_title": target.title,
        "is_pull_request": on_pull
        or (env.issue is not None and env.issue.pull_request is not None),
        "sender_login": env.sender.login,
        "sender_id": env.sender.id,
    }

    if event == "issues":
        if env.action != "labeled":
            return Ignored(f"issues.{env.action} is not handled")
        if env.label is None or env.label.name.casefold() != bot.trigger_label.casefold():
            return Ignored("not the trigger label")
        return Trigger(kind="label", **base)

    if event == "pull_request_review":
        if env.action != "submitted":
            return Ignored(f"pull_request_review.{env.action} is not handled")
        if env.review is None:
            return Ignored("review missing")
        # A review has no issue-comment id to react to: the 👀 goes on the PR itself.
        return _command_trigger(env.review.body, None, "", base)

    if env.action != "created":
        return Ignored(f"{event}.{env.action} is not handled")
    comment = env.comment
    if comment is None:
        return Ignored("comment missing")
    app = comment.performed_via_github_app
    if app is not None and app.id == bot.app_id:
        return Ignored("the App's own comment")
    if event == "pull_request_review_comment":
        context = ""
        if comment.path:
            line = f", line {comment.line}" if comment.line else ""
            context = f"\n\n(Review comment on {comment.path}{line}.)"
        return _command_trigger(comment.body, None, context, base)
    return _command_trigger(comment.body, comment.id, "", base)


def _command_trigger(
    body: str | None, comment_id: int | None, context: str, base: dict[str, Any]
) -> Trigger | Ignored:
    """A `/baro …` text as a comment trigger; `context` (where a review comment sits) is
    appended to the instructions so the planner knows what the reviewer pointed at."""
    try:
        command: Command | None = parse_command(body or "")
    except CommandError as exc:
        return Trigger(
            kind="comment", comment_id=comment_id, verb="invalid", command_error=str(exc), **base
        )
    if command is None:
        return Ignored("comment is not a /baro command")
    instructions = command.instructions + context if command.instructions else ""
    return Trigger(
        kind="comment",
        comment_id=comment_id,
        verb=command.verb,
        instructions=instructions,
        stories=command.stories,
        **base,
    )

"""Signed webhook deliveries, with payloads built from real GitHub fixtures and testbed state.

The fixture supplies every field GitHub sends; the testbed overwrites the parts that must
agree with its own world (repository, issue, label, comment, sender, installation).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

from testbed.github import shapes
from testbed.github.state import App, GitHubState, Repo, User, node_id

JSON = dict[str, Any]


def default_fixtures_dir() -> Path:
    """`$BARO_WEBHOOK_FIXTURES`, else the real payloads shipped with the testbed."""
    env = os.environ.get("BARO_WEBHOOK_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "fixtures" / "github-webhooks"


def sign(secret: str, body: bytes) -> str:
    """`X-Hub-Signature-256` value: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_sha1(secret: str, body: bytes) -> str:
    """Legacy `X-Hub-Signature` value."""
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def github_headers(
    event: str,
    delivery_id: str | None = None,
    signature: str | None = None,
    *,
    signature_sha1: str | None = None,
    hook_id: int = 462371542,
    target_id: int | None = None,
    target_type: str = "integration",
) -> dict[str, str]:
    """The headers GitHub's hookshot sends with a delivery."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/abc1234",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(target_id if target_id is not None else 0),
        "X-GitHub-Hook-Installation-Target-Type": target_type,
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    if signature_sha1 is not None:
        headers["X-Hub-Signature"] = signature_sha1
    return headers


def encode_payload(payload: JSON | bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    return json.dumps(payload, separators=(",", ":")).encode()


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    event: str,
    payload: JSON | bytes,
    secret: str,
    delivery_id: str | None = None,
    *,
    target_id: int | None = None,
    extra_headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST one signed delivery to `url` (same id on redelivery: pass `delivery_id`)."""
    body = encode_payload(payload)
    headers = github_headers(
        event,
        delivery_id,
        sign(secret, body),
        signature_sha1=sign_sha1(secret, body),
        target_id=target_id,
    )
    headers.update(extra_headers or {})
    return await client.post(url, content=body, headers=headers)


# Payload builders -------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _read_fixture(path: Path) -> str:
    return path.read_text()


def load_fixture(event: str, *names: str, fixtures_dir: Path | None = None) -> JSON:
    """A fresh copy of the first fixture that exists among `names` in `<dir>/<event>/`."""
    folder = (fixtures_dir or default_fixtures_dir()) / event
    for name in names:
        path = folder / name
        if path.exists():
            data: JSON = json.loads(_read_fixture(path))
            return data
    raise FileNotFoundError(f"none of {names} in {folder}")


def _merged(template: Any, ours: JSON) -> JSON:
    base: JSON = copy.deepcopy(template) if isinstance(template, dict) else {}
    base.update(ours)
    return base


def _installation_stub(installation_id: int) -> JSON:
    return {"id": installation_id, "node_id": node_id("IntegrationInstallation", installation_id)}


def _common(
    state: GitHubState, template: JSON, repo: Repo, sender: User, installation_id: int
) -> JSON:
    payload = copy.deepcopy(template)
    base = state.base_url
    payload["repository"] = _merged(template.get("repository"), shapes.repository(base, repo))
    payload["sender"] = shapes.simple_user(base, sender)
    payload["installation"] = _installation_stub(installation_id)
    if repo.owner.type == "Organization":
        login = repo.owner.login
        api = f"{base}/orgs/{login}"
        payload["organization"] = {
            "login": login,
            "id": repo.owner.id,
            "node_id": repo.owner.node_id,
            "url": api,
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events",
            "hooks_url": f"{api}/hooks",
            "issues_url": f"{api}/issues",
            "members_url": f"{api}/members{{/member}}",
            "public_members_url": f"{api}/public_members{{/member}}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{repo.owner.id}?v=4",
            "description": "",
        }
    else:
        payload.pop("organization", None)
    return payload


def issue_labeled_payload(
    state: GitHubState,
    repo: Repo | str,
    issue_number: int,
    label: str,
    sender_login: str,
    installation_id: int,
    *,
    fixtures_dir: Path | None = None,
) -> JSON:
    """An `issues`/`labeled` payload; applies `label` to the issue in state first (as GitHub
    would have), so the payload's `issue.labels` and the API agree."""
    template = load_fixture(
        "issues",
        "labeled.with-installation.payload.json",
        "labeled.payload.json",
        fixtures_dir=fixtures_dir,
    )
    with state.lock:
        target = state.get_repo(repo)
        state.add_labels(target, issue_number, [label])
        item = state.get_issue(target, issue_number)
        label_obj = state.ensure_label(target, label)
        payload = _common(state, template, target, state.user(sender_login), installation_id)
        payload["action"] = "labeled"
        payload["issue"] = _merged(
            template.get("issue"), shapes.issue(state.base_url, target, item)
        )
        payload["label"] = shapes.label(state.base_url, target, label_obj)
        return payload


def issue_comment_created_payload(
    state: GitHubState,
    repo: Repo | str,
    issue_number: int,
    comment_body: str,
    commenter: str | App,
    installation_id: int,
    *,
    fixtures_dir: Path | None = None,
) -> JSON:
    """An `issue_comment`/`created` payload for a comment it creates in state. Pass an App as
    `commenter` to get a bot comment with `performed_via_github_app` (self-event tests)."""
    template = load_fixture(
        "issue_comment",
        "created.with-installation.payload.json",
        "created.payload.json",
        fixtures_dir=fixtures_dir,
    )
    with state.lock:
        target = state.get_repo(repo)
        if isinstance(commenter, App):
            comment = state.create_comment(target, issue_number, comment_body, app=commenter)
        else:
            comment = state.create_comment(target, issue_number, comment_body, commenter)
        item = state.get_issue(target, issue_number)
        payload = _common(state, template, target, comment.user, installation_id)
        payload["action"] = "created"
        payload["issue"] = _merged(
            template.get("issue"), shapes.issue(state.base_url, target, item)
        )
        payload["comment"] = _merged(
            template.get("comment"), shapes.issue_comment(state.base_url, target, comment)
        )
        return payload


def pull_request_review_comment_payload(
    state: GitHubState,
    repo: Repo | str,
    number: int,
    body: str,
    commenter: str,
    installation_id: int,
    *,
    path: str = "README.md",
    line: int = 1,
    fixtures_dir: Path | None = None,
) -> JSON:
    """A `pull_request_review_comment`/`created` payload on PR `number` (an inline comment on
    `path`:`line`). Review comments are not kept in state: the bot never reads them back."""
    template = load_fixture(
        "pull_request_review_comment", "created.payload.json", fixtures_dir=fixtures_dir
    )
    with state.lock:
        target = state.get_repo(repo)
        pull = target.pulls[number]
        user = state.user(commenter)
        payload = _common(state, template, target, user, installation_id)
        payload["action"] = "created"
        payload["pull_request"] = _merged(
            template.get("pull_request"), shapes.pull_request(state.base_url, target, pull)
        )
        comment = copy.deepcopy(template["comment"])
        comment.update(
            {
                "id": state.new_id(),
                "body": body,
                "path": path,
                "line": line,
                "original_line": line,
                "user": shapes.simple_user(state.base_url, user),
                "pull_request_url": payload["pull_request"]["url"],
            }
        )
        payload["comment"] = comment
        return payload

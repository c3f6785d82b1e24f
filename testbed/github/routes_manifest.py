"""GitHub's App manifest flow: the "new App" web pages and the code exchange.

A browser posts the form field `manifest` (JSON) to `/settings/apps/new?state=S`, or to
`/organizations/{org}/settings/apps/new?state=S` for an organization's App. GitHub would
show the signed-in user a confirmation form; the testbed creates the App at once (owned by
`octocat`, or by the organization) and redirects to the manifest's `redirect_url` with a
one-time `code` and the `state`. `POST /app-manifests/{code}/conversions`, unauthenticated,
trades the code, once and within an hour, for the App's id, private key and secrets. The App
is an ordinary testbed App: its JWTs and installations work like any other's.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from testbed.github import shapes
from testbed.github.errors import GitHubError, validation_failed
from testbed.github.state import App, GitHubState, ManifestCode, User, utcnow
from testbed.github.web import get_state, ok

SIGNED_IN_USER = "octocat"
"""Who "is logged in" for `/settings/apps/new` (the testbed has no browser sessions)."""
CODE_TTL = timedelta(hours=1)
MAX_NAME_LENGTH = 34
CONVERSION_DOCS = "https://docs.github.com/rest/apps/apps#create-a-github-app-from-a-manifest"

LEVELS = ("read", "write", "admin")
KNOWN_PERMISSIONS = frozenset(
    {
        "actions",
        "administration",
        "checks",
        "contents",
        "deployments",
        "discussions",
        "environments",
        "issues",
        "members",
        "metadata",
        "organization_administration",
        "organization_hooks",
        "organization_projects",
        "packages",
        "pages",
        "pull_requests",
        "repository_hooks",
        "repository_projects",
        "secret_scanning_alerts",
        "secrets",
        "security_events",
        "single_file",
        "statuses",
        "vulnerability_alerts",
        "workflows",
    }
)
#: Each event needs one of these permissions (metadata: every App has it).
EVENT_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "issues": ("issues",),
    "issue_comment": ("issues", "pull_requests"),
    "label": ("metadata",),
    "milestone": ("issues", "pull_requests"),
    "pull_request": ("pull_requests",),
    "pull_request_review": ("pull_requests",),
    "pull_request_review_comment": ("pull_requests",),
    "pull_request_review_thread": ("pull_requests",),
    "push": ("contents",),
    "create": ("contents",),
    "delete": ("contents",),
    "release": ("contents",),
    "commit_comment": ("contents",),
    "check_run": ("checks",),
    "check_suite": ("checks",),
    "status": ("statuses",),
    "workflow_run": ("actions",),
    "workflow_job": ("actions",),
    "deployment": ("deployments",),
    "deployment_status": ("deployments",),
    "repository": ("metadata",),
    "public": ("metadata",),
    "star": ("metadata",),
    "watch": ("metadata",),
    "fork": ("metadata",),
}


def _invalid(field: str, message: str, code: str = "invalid") -> GitHubError:
    return validation_failed(
        {"resource": "Integration", "field": field, "code": code, "message": message}
    )


def _http_url(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(field, f"{field} is required", "missing_field")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(field, f"{field} must be an http(s) URL")
    return value


def slug_for(name: str) -> str:
    """GitHub's slug: lower case, every run of other characters one `-`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def parse_manifest(raw: str | None) -> dict[str, Any]:
    """The manifest's fields, checked like GitHub checks them; 422 naming the bad field."""
    if raw is None:
        raise _invalid("manifest", "manifest is required", "missing_field")
    try:
        data = json.loads(raw)
    except ValueError:
        raise _invalid("manifest", "manifest is not valid JSON") from None
    if not isinstance(data, dict):
        raise _invalid("manifest", "manifest must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _invalid("name", "name is required", "missing_field")
    if len(name) > MAX_NAME_LENGTH or not slug_for(name):
        raise _invalid("name", f"name must have 1 to {MAX_NAME_LENGTH} characters, some letters")
    url = _http_url(data.get("url"), "url")
    hook = data.get("hook_attributes")
    if not isinstance(hook, dict):
        raise _invalid("hook_attributes", "hook_attributes is required", "missing_field")
    hook_url = _http_url(hook.get("url"), "hook_attributes.url")
    redirect_url = _http_url(data.get("redirect_url"), "redirect_url")
    permissions = data.get("default_permissions", {})
    if not isinstance(permissions, dict):
        raise _invalid("default_permissions", "default_permissions must be an object")
    for perm, level in permissions.items():
        if perm not in KNOWN_PERMISSIONS:
            raise _invalid("default_permissions", f"unknown permission {perm!r}")
        if level not in LEVELS or (perm == "metadata" and level != "read"):
            raise _invalid("default_permissions", f"invalid level {level!r} for {perm}")
    granted = {"metadata": "read", **permissions}
    events = data.get("default_events", [])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise _invalid("default_events", "default_events must be a list of event names")
    for event in events:
        needs = EVENT_PERMISSIONS.get(event)
        if needs is None:
            raise _invalid("default_events", f"Default events unsupported: {event}")
        if not any(p in granted for p in needs):
            raise _invalid(
                "default_events",
                f"Default events unsupported: {event} (needs {' or '.join(needs)})",
            )
    description = data.get("description")
    return {
        "name": name.strip(),
        "url": url,
        "description": description if isinstance(description, str) else "",
        "hook_url": hook_url,
        "redirect_url": redirect_url,
        "public": bool(data.get("public", False)),
        "permissions": granted,
        "events": list(dict.fromkeys(events)),
    }


def create_app_from_manifest(
    state: GitHubState, fields: dict[str, Any], owner: User
) -> tuple[App, str]:
    """A new App (fresh key pair, secrets, unique slug) and its one-time code."""
    with state.lock:
        base = slug_for(fields["name"])
        taken = {app.slug for app in state.apps.values()}
        slug, n = base, 1
        while slug in taken or f"{slug}[bot]" in state.users:
            n += 1
            slug = f"{base}-{n}"
        app = state.create_app(
            slug,
            name=fields["name"],
            owner=owner.login,
        )
        app.permissions = dict(fields["permissions"])  # as given, even when empty
        app.events = list(fields["events"])
        app.description = fields["description"]
        app.client_secret = secrets.token_hex(20)
        app.external_url = fields["url"]
        app.webhook_url = fields["hook_url"]
        app.public = fields["public"]
        code = secrets.token_hex(10)
        state.manifest_codes[code] = ManifestCode(app, utcnow() + CODE_TTL)
        return app, code


def conversion(base: str, state: GitHubState, app: App) -> dict[str, Any]:
    """`POST /app-manifests/{code}/conversions`'s 201 body: the App plus its secrets."""
    data = shapes.integration(base, app)
    data["external_url"] = app.external_url or data["external_url"]
    data["description"] = app.description or None
    data["installations_count"] = sum(1 for i in state.installations.values() if i.app is app)
    data["client_secret"] = app.client_secret
    data["webhook_secret"] = app.webhook_secret
    data["pem"] = app.private_key_pem
    return data


def _redirect_to(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _new_app(request: Request, owner: User) -> Response:
    body = (await request.body()).decode("utf-8", "replace")
    form = parse_qs(body, keep_blank_values=True)
    fields = parse_manifest(form.get("manifest", [None])[-1])
    state = get_state(request)
    _app, code = await run_in_threadpool(create_app_from_manifest, state, fields, owner)
    params = {"code": code}
    if "state" in request.query_params:
        params["state"] = request.query_params["state"]
    return RedirectResponse(_redirect_to(fields["redirect_url"], **params), status_code=302)


async def new_user_app(request: Request) -> Response:
    return await _new_app(request, get_state(request).user(SIGNED_IN_USER, "User"))


async def new_org_app(request: Request) -> Response:
    org = request.path_params["org"]
    return await _new_app(request, get_state(request).user(org, "Organization"))


async def convert(request: Request) -> Response:
    state = get_state(request)
    with state.lock:
        entry = state.manifest_codes.pop(request.path_params["code"], None)
        if entry is None or entry.expires_at <= utcnow():
            raise GitHubError(404, "Not Found", documentation_url=CONVERSION_DOCS)
        return ok(conversion(state.base_url, state, entry.app), 201)


routes = [
    Route("/settings/apps/new", new_user_app, methods=["POST"]),
    Route("/organizations/{org}/settings/apps/new", new_org_app, methods=["POST"]),
    Route("/app-manifests/{code}/conversions", convert, methods=["POST"]),
]

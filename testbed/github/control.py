"""`/_testbed/...`: a thin JSON control API over the state, for out-of-process drivers (demo).

No auth: the server listens on loopback only. Errors come back in GitHub's error shape.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testbed.github import delivery, gitops, shapes
from testbed.github.errors import GitHubError, not_found
from testbed.github.faults import Fault
from testbed.github.routes_hooks import deliver_recorded
from testbed.github.state import App, GitHubState, Repo
from testbed.github.web import get_state, no_content, ok, read_object

P = "/_testbed"
RP = "/_testbed/repos/{owner}/{repo}"


def _repo(state: GitHubState, request: Request) -> Repo:
    return state.get_repo(f"{request.path_params['owner']}/{request.path_params['repo']}")


def _require(data: dict[str, Any], *names: str) -> list[Any]:
    missing = [n for n in names if data.get(n) in (None, "")]
    if missing:
        raise GitHubError(400, f"missing field(s): {', '.join(missing)}")
    return [data[n] for n in names]


def _app_json(app: App) -> dict[str, Any]:
    return {
        "id": app.id,
        "slug": app.slug,
        "name": app.name,
        "client_id": app.client_id,
        "bot_login": app.bot.login,
        "private_key_pem": app.private_key_pem,
        "webhook_secret": app.webhook_secret,
    }


def _repo_json(state: GitHubState, repo: Repo) -> dict[str, Any]:
    return {
        "id": repo.id,
        "owner": repo.owner.login,
        "name": repo.name,
        "full_name": repo.full_name,
        "default_branch": repo.default_branch,
        "clone_url": shapes.clone_url(state.base_url, repo),
        "html_url": shapes.repo_html(state.base_url, repo),
        "git_dir": str(repo.git_dir),
    }


async def health(request: Request) -> Response:
    return ok({"ok": True, "base_url": get_state(request).base_url})


async def summary(request: Request) -> Response:
    state = get_state(request)
    with state.lock:
        return ok(
            {
                "base_url": state.base_url,
                "apps": [_app_json(a) for a in state.apps.values()],
                "installations": [
                    {
                        "id": i.id,
                        "app_id": i.app.id,
                        "account": i.account.login,
                        "repository_selection": i.repository_selection,
                        "repositories": [r.full_name for r in state.repos.values() if i.covers(r)],
                    }
                    for i in state.installations.values()
                ],
                "repos": [_repo_json(state, r) for r in state.repos.values()],
            }
        )


async def create_app(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    app = await run_in_threadpool(
        lambda: state.create_app(
            data.get("slug") or "baro-bot",
            name=data.get("name"),
            owner=data.get("owner") or "baro-dev",
            permissions=data.get("permissions"),
            webhook_secret=data.get("webhook_secret"),
        )
    )
    return ok(_app_json(app), 201)


async def create_installation(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    app_id, account = _require(data, "app_id", "account")
    with state.lock:
        app = state.apps.get(int(app_id))
        if app is None:
            raise not_found()
        inst = state.create_installation(
            app,
            account,
            repositories=data.get("repositories") or (),
            repository_selection=data.get("repository_selection") or "selected",
            permissions=data.get("permissions"),
        )
        return ok(shapes.installation(state.base_url, inst), 201)


async def create_token(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    ttl = data.get("ttl_seconds")
    token = state.create_token(
        int(request.path_params["installation_id"]),
        repositories=data.get("repositories"),
        permissions=data.get("permissions"),
        ttl=timedelta(seconds=float(ttl)) if ttl is not None else None,
    )
    return ok({"token": token.token, "expires_at": shapes.ts(token.expires_at)}, 201)


async def create_repo(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    owner, name = _require(data, "owner", "name")
    inst_id = data.get("installation_id")
    installation = state.installations.get(int(inst_id)) if inst_id is not None else None
    if inst_id is not None and installation is None:
        raise not_found()
    repo = await run_in_threadpool(
        lambda: state.create_repo(
            owner,
            name,
            data.get("files"),
            installation=installation,
            default_branch=data.get("default_branch") or "main",
            private=bool(data.get("private", False)),
            description=data.get("description"),
        )
    )
    with state.lock:
        return ok(_repo_json(state, repo), 201)


async def create_issue(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    (title,) = _require(data, "title")
    with state.lock:
        repo = _repo(state, request)
        item = state.create_issue(
            repo,
            title,
            data.get("body", ""),
            data.get("user") or "octocat",
            labels=data.get("labels") or (),
        )
        return ok(shapes.issue(state.base_url, repo, item), 201)


async def get_issue(request: Request) -> Response:
    state = get_state(request)
    with state.lock:
        repo = _repo(state, request)
        item = state.get_issue(repo, int(request.path_params["number"]))
        return ok(shapes.issue(state.base_url, repo, item))


async def list_comments(request: Request) -> Response:
    state = get_state(request)
    with state.lock:
        repo = _repo(state, request)
        items = state.comments(repo, int(request.path_params["number"]))
        return ok([shapes.issue_comment(state.base_url, repo, c) for c in items])


async def add_comment(request: Request) -> Response:
    """A human's comment, without a webhook (use /webhooks to also deliver one)."""
    state = get_state(request)
    data = await read_object(request)
    (body,) = _require(data, "body")
    with state.lock:
        repo = _repo(state, request)
        comment = state.create_comment(
            repo, int(request.path_params["number"]), body, data.get("user") or "octocat"
        )
        return ok(shapes.issue_comment(state.base_url, repo, comment), 201)


def _reactions(
    request: Request, *, issue_number: int | None = None, comment_id: int | None = None
) -> Response:
    """The reactions on one issue or one comment, as GitHub shapes them."""
    state = get_state(request)
    with state.lock:
        items = state.reactions(
            _repo(state, request), issue_number=issue_number, comment_id=comment_id
        )
        return ok([shapes.reaction(state.base_url, r) for r in items])


async def issue_reactions(request: Request) -> Response:
    return _reactions(request, issue_number=int(request.path_params["number"]))


async def comment_reactions(request: Request) -> Response:
    return _reactions(request, comment_id=int(request.path_params["comment_id"]))


async def issue_labels(request: Request) -> Response:
    state = get_state(request)
    return ok(state.labels(_repo(state, request), int(request.path_params["number"])))


async def add_issue_labels(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    labels = state.add_labels(
        _repo(state, request), int(request.path_params["number"]), data.get("labels") or []
    )
    return ok([x.name for x in labels])


async def set_permission(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    role = data.get("permission") or data.get("role")
    try:
        state.set_permission(_repo(state, request), request.path_params["login"], str(role))
    except ValueError as exc:
        raise GitHubError(400, str(exc)) from exc
    permission, role_name = state.permission(_repo(state, request), request.path_params["login"])
    return ok({"permission": permission, "role_name": role_name})


async def list_pulls(request: Request) -> Response:
    state = get_state(request)
    repo = _repo(state, request)
    pulls = state.pulls(repo, state=request.query_params.get("state", "all"))
    for pull in pulls:
        await run_in_threadpool(state.refresh_pull, repo, pull)
    with state.lock:
        return ok([shapes.pull_request(state.base_url, repo, p) for p in pulls])


async def branches(request: Request) -> Response:
    state = get_state(request)
    repo = _repo(state, request)
    refs = await run_in_threadpool(gitops.list_refs, repo.git_dir, "refs/heads/")
    return ok({r.ref.removeprefix("refs/heads/"): r.sha for r in refs})


async def read_file(request: Request) -> Response:
    state = get_state(request)
    repo = _repo(state, request)
    ref = request.query_params.get("ref") or repo.default_branch
    path = request.query_params.get("path") or ""
    content = await run_in_threadpool(state.read_file, repo, ref, path)
    if content is None:
        raise not_found()
    return Response(content, media_type="application/octet-stream")


def _fault_json(fault: Fault) -> dict[str, Any]:
    return fault.describe()


async def add_fault(request: Request) -> Response:
    """Body: the FaultSet.add fields, or `{"preset": "<FaultSet method>", ...its kwargs}`."""
    state = get_state(request)
    data = await read_object(request)
    preset = data.pop("preset", None)
    try:
        if preset is None:
            fault = state.faults.add(**data)
        elif preset in {
            "secondary_rate_limit",
            "too_many_requests",
            "primary_rate_limit",
            "server_error",
            "validation_failed",
            "slow",
        }:
            fault = getattr(state.faults, preset)(**data)
        else:
            raise GitHubError(400, f"unknown preset {preset!r}")
    except TypeError as exc:
        raise GitHubError(400, str(exc)) from exc
    return ok(_fault_json(fault), 201)


async def list_faults(request: Request) -> Response:
    return ok([_fault_json(f) for f in get_state(request).faults.snapshot()])


async def clear_faults(request: Request) -> Response:
    get_state(request).faults.clear()
    return no_content()


async def request_log(request: Request) -> Response:
    state = get_state(request)
    records = state.request_log(
        request.query_params.get("method"), request.query_params.get("path")
    )
    return ok([r.as_dict() for r in records])


async def clear_request_log(request: Request) -> Response:
    state = get_state(request)
    with state.lock:
        state.requests.clear()
    return no_content()


async def reset(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    await run_in_threadpool(lambda: state.reset(keep_apps=bool(data.get("keep_apps", True))))
    return no_content()


async def send_webhook(request: Request) -> Response:
    """Build a realistic payload from state, sign it with the App's secret and deliver it.

    Body: {url, event: "issues.labeled"|"issue_comment.created", owner, repo, number,
    sender, label | body, app_id?, installation_id?, delivery_id?}
    """
    state = get_state(request)
    data = await read_object(request)
    url, event, owner, name, number, sender = _require(
        data, "url", "event", "owner", "repo", "number", "sender"
    )
    with state.lock:
        repo = state.get_repo(f"{owner}/{name}")
        apps = list(state.apps.values())
        app = state.apps.get(int(data["app_id"])) if data.get("app_id") else None
        if app is None:
            covering = [a for a in apps if state.installation_for(a, repo) is not None]
            if not covering:
                raise GitHubError(400, "no App is installed on that repo")
            app = covering[0]
        inst = state.installation_for(app, repo)
        inst_id = int(data.get("installation_id") or (inst.id if inst else 0))
    if event == "issues.labeled":
        (label,) = _require(data, "label")
        payload = delivery.issue_labeled_payload(state, repo, int(number), label, sender, inst_id)
    elif event == "issue_comment.created":
        (body,) = _require(data, "body")
        commenter: str | App = app if sender == app.bot.login else sender
        payload = delivery.issue_comment_created_payload(
            state, repo, int(number), body, commenter, inst_id
        )
    else:
        raise GitHubError(400, f"unsupported event {event!r}")
    async with httpx.AsyncClient(timeout=30) as client:
        response = await deliver_recorded(
            state, app, client, url, event.split(".", 1)[0], payload, data.get("delivery_id")
        )
    return ok(
        {
            "status": response.status_code,
            "delivery_id": response.request.headers["X-GitHub-Delivery"],
            "response": response.text,
            "payload": payload,
        }
    )


routes = [
    Route(f"{P}/health", health, methods=["GET"]),
    Route(f"{P}/state", summary, methods=["GET"]),
    Route(f"{P}/reset", reset, methods=["POST"]),
    Route(f"{P}/apps", create_app, methods=["POST"]),
    Route(f"{P}/installations", create_installation, methods=["POST"]),
    Route(f"{P}/installations/{{installation_id:int}}/tokens", create_token, methods=["POST"]),
    Route(f"{P}/repos", create_repo, methods=["POST"]),
    Route(f"{RP}/issues", create_issue, methods=["POST"]),
    Route(f"{RP}/issues/{{number:int}}", get_issue, methods=["GET"]),
    Route(f"{RP}/issues/{{number:int}}/comments", list_comments, methods=["GET"]),
    Route(f"{RP}/issues/{{number:int}}/comments", add_comment, methods=["POST"]),
    Route(f"{RP}/issues/{{number:int}}/reactions", issue_reactions, methods=["GET"]),
    Route(f"{RP}/issues/{{number:int}}/labels", issue_labels, methods=["GET"]),
    Route(f"{RP}/issues/{{number:int}}/labels", add_issue_labels, methods=["POST"]),
    Route(f"{RP}/comments/{{comment_id:int}}/reactions", comment_reactions, methods=["GET"]),
    Route(f"{RP}/permissions/{{login}}", set_permission, methods=["PUT"]),
    Route(f"{RP}/pulls", list_pulls, methods=["GET"]),
    Route(f"{RP}/branches", branches, methods=["GET"]),
    Route(f"{RP}/file", read_file, methods=["GET"]),
    Route(f"{P}/faults", add_fault, methods=["POST"]),
    Route(f"{P}/faults", list_faults, methods=["GET"]),
    Route(f"{P}/faults", clear_faults, methods=["DELETE"]),
    Route(f"{P}/requests", request_log, methods=["GET"]),
    Route(f"{P}/requests", clear_request_log, methods=["DELETE"]),
    Route(f"{P}/webhooks", send_webhook, methods=["POST"]),
]

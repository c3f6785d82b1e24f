"""Issues, issue comments, reactions and labels endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testbed.github import shapes
from testbed.github.errors import GitHubError, validation_failed
from testbed.github.web import (
    body_too_long,
    missing_field,
    no_content,
    ok,
    paginate,
    path_number,
    read_json,
    read_object,
    repo_access,
    required_text,
)

ISSUE_PERMS = ("issues", "pull_requests")
R = "/repos/{owner}/{repo}"


def _label_names(raw: Any) -> list[str]:
    """Labels may come as `{"labels": [...]}` or a bare list, of names or `{"name": ...}`."""
    if isinstance(raw, dict):
        raw = raw.get("labels", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise validation_failed({"resource": "Label", "field": "labels", "code": "invalid"})
    names = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not name:
            raise validation_failed({"resource": "Label", "field": "name", "code": "invalid"})
        names.append(name)
    return names


# Issues -------------------------------------------------------------------------------


async def get_issue(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "read")
    with state.lock:
        item = state.get_issue(repo, path_number(request))
        return ok(shapes.issue(state.base_url, repo, item))


async def create_issue(request: Request) -> Response:
    state, repo, token = repo_access(request, "issues", "write")
    data = await read_object(request)
    title = required_text(data, "Issue", "title")
    body_too_long("Issue", data.get("body"))
    with state.lock:
        item = state.create_issue(
            repo,
            title,
            data.get("body"),
            labels=_label_names(data.get("labels") or []),
            app=token.installation.app,
        )
        item.assignees = [state.user(x) for x in data.get("assignees") or []]
        return ok(shapes.issue(state.base_url, repo, item), 201)


async def update_issue(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    data = await read_object(request)
    body_too_long("Issue", data.get("body"))
    labels = _label_names(data["labels"]) if "labels" in data else None
    with state.lock:
        item = state.update_issue(
            repo,
            path_number(request),
            title=data.get("title"),
            body=data.get("body"),
            state=data.get("state"),
            state_reason=data.get("state_reason"),
            labels=labels,
        )
        if "assignees" in data:
            item.assignees = [state.user(x) for x in data.get("assignees") or []]
        return ok(shapes.issue(state.base_url, repo, item))


# Comments -----------------------------------------------------------------------------


async def list_comments(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "read")
    since_raw = request.query_params.get("since")
    since = datetime.fromisoformat(since_raw.replace("Z", "+00:00")) if since_raw else None
    with state.lock:
        state.get_issue(repo, path_number(request))
        items = [
            c
            for c in state.comments(repo, path_number(request))
            if since is None or c.updated_at >= since
        ]
        page, headers = paginate(request, items)
        return ok([shapes.issue_comment(state.base_url, repo, c) for c in page], headers=headers)


async def _comment_body(request: Request) -> str:
    """The `body` a new or edited comment must have, within GitHub's size limit."""
    body = required_text(await read_object(request), "IssueComment", "body")
    body_too_long("IssueComment", body)
    return body


async def create_comment(request: Request) -> Response:
    state, repo, token = repo_access(request, ISSUE_PERMS, "write")
    body = await _comment_body(request)
    with state.lock:
        comment = state.create_comment(repo, path_number(request), body, app=token.installation.app)
        data = shapes.issue_comment(state.base_url, repo, comment)
        return ok(data, 201, headers={"location": data["url"]})


async def get_comment(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "read")
    with state.lock:
        comment = state.get_comment(repo, request.path_params["comment_id"])
        return ok(shapes.issue_comment(state.base_url, repo, comment))


async def update_comment(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    body = await _comment_body(request)
    with state.lock:
        comment = state.update_comment(repo, request.path_params["comment_id"], body)
        return ok(shapes.issue_comment(state.base_url, repo, comment))


async def delete_comment(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    state.delete_comment(repo, request.path_params["comment_id"])
    return no_content()


# Reactions ----------------------------------------------------------------------------


def _reaction_target(request: Request) -> dict[str, int]:
    if "comment_id" in request.path_params:
        return {"comment_id": request.path_params["comment_id"]}
    return {"issue_number": request.path_params["number"]}


async def create_reaction(request: Request) -> Response:
    state, repo, token = repo_access(request, ISSUE_PERMS, "write")
    data = await read_object(request)
    content = data.get("content")
    if not isinstance(content, str):
        raise missing_field("Reaction", "content")
    with state.lock:
        reaction, created = state.add_reaction(
            repo, content, token.installation.app.bot, **_reaction_target(request)
        )
        return ok(shapes.reaction(state.base_url, reaction), 201 if created else 200)


async def list_reactions(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "read")
    content = request.query_params.get("content")
    with state.lock:
        items = [
            r
            for r in state.reactions(repo, **_reaction_target(request))
            if content is None or r.content == content
        ]
        page, headers = paginate(request, items)
        return ok([shapes.reaction(state.base_url, r) for r in page], headers=headers)


async def delete_reaction(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    state.delete_reaction(repo, request.path_params["reaction_id"], **_reaction_target(request))
    return no_content()


# Labels -------------------------------------------------------------------------------


async def list_issue_labels(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "read")
    with state.lock:
        item = state.get_issue(repo, path_number(request))
        return ok([shapes.label(state.base_url, repo, x) for x in item.labels])


async def add_labels(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    names = _label_names(await read_json(request))
    with state.lock:
        labels = state.add_labels(repo, path_number(request), names)
        return ok([shapes.label(state.base_url, repo, x) for x in labels])


async def set_labels(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    names = _label_names(await read_json(request))
    with state.lock:
        item = state.update_issue(repo, path_number(request), labels=names)
        return ok([shapes.label(state.base_url, repo, x) for x in item.labels])


async def remove_label(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    with state.lock:
        labels = state.remove_label(repo, path_number(request), request.path_params["name"])
        return ok([shapes.label(state.base_url, repo, x) for x in labels])


async def remove_all_labels(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    state.update_issue(repo, path_number(request), labels=[])
    return no_content()


async def get_repo_label(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "read")
    with state.lock:
        found = repo.labels.get(request.path_params["name"].lower())
        if found is None:
            raise GitHubError(404, "Not Found")
        return ok(shapes.label(state.base_url, repo, found))


async def list_repo_labels(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "read")
    with state.lock:
        page, headers = paginate(request, sorted(repo.labels.values(), key=lambda x: x.id))
        return ok([shapes.label(state.base_url, repo, x) for x in page], headers=headers)


async def create_repo_label(request: Request) -> Response:
    state, repo, _ = repo_access(request, ISSUE_PERMS, "write")
    data = await read_object(request)
    name = required_text(data, "Label", "name")
    with state.lock:
        created = state.create_label(
            repo, name, str(data.get("color") or "ededed"), data.get("description")
        )
        return ok(shapes.label(state.base_url, repo, created), 201)


def _reaction_routes(subject: str) -> list[Route]:
    """List, add and delete reactions on one subject (an issue or an issue comment)."""
    return [
        Route(f"{subject}/reactions", list_reactions, methods=["GET"]),
        Route(f"{subject}/reactions", create_reaction, methods=["POST"]),
        Route(f"{subject}/reactions/{{reaction_id:int}}", delete_reaction, methods=["DELETE"]),
    ]


routes = [
    Route(f"{R}/issues", create_issue, methods=["POST"]),
    Route(f"{R}/issues/comments/{{comment_id:int}}", get_comment, methods=["GET"]),
    Route(f"{R}/issues/comments/{{comment_id:int}}", update_comment, methods=["PATCH"]),
    Route(f"{R}/issues/comments/{{comment_id:int}}", delete_comment, methods=["DELETE"]),
    *_reaction_routes(f"{R}/issues/comments/{{comment_id:int}}"),
    Route(f"{R}/issues/{{number:int}}", get_issue, methods=["GET"]),
    Route(f"{R}/issues/{{number:int}}", update_issue, methods=["PATCH"]),
    Route(f"{R}/issues/{{number:int}}/comments", list_comments, methods=["GET"]),
    Route(f"{R}/issues/{{number:int}}/comments", create_comment, methods=["POST"]),
    *_reaction_routes(f"{R}/issues/{{number:int}}"),
    Route(f"{R}/issues/{{number:int}}/labels", list_issue_labels, methods=["GET"]),
    Route(f"{R}/issues/{{number:int}}/labels", add_labels, methods=["POST"]),
    Route(f"{R}/issues/{{number:int}}/labels", set_labels, methods=["PUT"]),
    Route(f"{R}/issues/{{number:int}}/labels", remove_all_labels, methods=["DELETE"]),
    Route(f"{R}/issues/{{number:int}}/labels/{{name}}", remove_label, methods=["DELETE"]),
    Route(f"{R}/labels", list_repo_labels, methods=["GET"]),
    Route(f"{R}/labels", create_repo_label, methods=["POST"]),
    Route(f"{R}/labels/{{name}}", get_repo_label, methods=["GET"]),
]

"""Request/response plumbing shared by the route modules: JSON, auth lookup, pagination."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from testbed.github.auth import Identity, require_token
from testbed.github.errors import GitHubError, not_found
from testbed.github.state import GitHubState, InstallationToken, Repo

T = TypeVar("T")

IDENTITY_KEY = "testbed.identity"
JSON_TYPE = "application/json; charset=utf-8"


class GitHubJSONResponse(JSONResponse):
    """JSON with GitHub's content type (`application/json; charset=utf-8`)."""

    media_type = JSON_TYPE


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return GitHubJSONResponse(data, status_code=status, headers=headers)


def no_content() -> Response:
    return Response(status_code=204)


def get_state(request: Request) -> GitHubState:
    state: GitHubState = request.app.state.github
    return state


def identity(request: Request) -> Identity | None:
    """What the middleware made of the Authorization header; re-raises its 401."""
    found = request.scope.get(IDENTITY_KEY)
    if isinstance(found, GitHubError):
        raise found
    if found is None or isinstance(found, Identity):
        return found
    raise TypeError(f"unexpected identity {found!r}")


def repo_access(
    request: Request, permission: str | tuple[str, ...], level: str
) -> tuple[GitHubState, Repo, InstallationToken]:
    """The addressed repo and the caller's token, or GitHub's 401/403/404."""
    state = get_state(request)
    who = identity(request)
    repo = state.find_repo(request.path_params["owner"], request.path_params["repo"])
    if repo is None:
        if who is None:
            raise GitHubError(401, "Requires authentication")
        raise not_found()
    token = require_token(who, repo, permission, level)
    return state, repo, token


async def read_json(request: Request, *, allow_empty: bool = True) -> Any:
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise GitHubError(400, "Problems parsing JSON")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise GitHubError(400, "Problems parsing JSON") from exc


async def read_object(request: Request) -> dict[str, Any]:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise GitHubError(400, "Problems parsing JSON")
    return data


def int_param(request: Request, name: str, default: int, *, low: int = 1, high: int = 10**9) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return default
    return max(low, min(high, value))


def paginate(request: Request, items: Sequence[T]) -> tuple[list[T], dict[str, str]]:
    """One page of `items` (`per_page` ≤ 100, default 30) and GitHub's `Link` header."""
    per_page = int_param(request, "per_page", 30, high=100)
    page = int_param(request, "page", 1)
    last = max(1, -(-len(items) // per_page))
    chunk = list(items[(page - 1) * per_page : page * per_page])
    links = []

    def url(n: int) -> str:
        return str(request.url.include_query_params(per_page=per_page, page=n))

    if page > 1:
        links.append(f'<{url(min(page - 1, last))}>; rel="prev"')
    if page < last:
        links.append(f'<{url(page + 1)}>; rel="next"')
        links.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        links.append(f'<{url(1)}>; rel="first"')
    return chunk, ({"link": ", ".join(links)} if links else {})


def body_too_long(resource: str, body: object) -> None:
    """GitHub rejects bodies over 65,536 characters with a 422."""
    if isinstance(body, str) and len(body) > 65536:
        raise GitHubError(
            422,
            "Validation Failed",
            errors=[
                {
                    "resource": resource,
                    "code": "custom",
                    "field": "body",
                    "message": "body is too long (maximum is 65536 characters)",
                }
            ],
        )


def missing_field(resource: str, field: str) -> GitHubError:
    return GitHubError(
        422,
        "Validation Failed",
        errors=[{"resource": resource, "code": "missing_field", "field": field}],
    )


def required_text(data: Mapping[str, Any], resource: str, field: str) -> str:
    """`data[field]` as a non-empty string, or GitHub's 422 for a missing field."""
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise missing_field(resource, field)
    return value


def path_number(request: Request) -> int:
    """The `{number:int}` of an issue or pull route."""
    value: int = request.path_params["number"]
    return value

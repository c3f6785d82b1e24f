"""The one GraphQL mutation the bot uses: `markPullRequestReadyForReview` (REST cannot
turn a draft into a ready PR). Answers in GitHub's GraphQL shapes, errors included."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from testbed.github.auth import require_token
from testbed.github.entities import node_id
from testbed.github.errors import GitHubError
from testbed.github.web import get_state, identity, read_object

_MUTATION = re.compile(r"\bmarkPullRequestReadyForReview\b")


def _errors(message: str, kind: str = "NOT_FOUND") -> Response:
    return JSONResponse({"data": None, "errors": [{"type": kind, "message": message}]})


async def graphql(request: Request) -> Response:
    state = get_state(request)
    who = identity(request)
    if who is None:
        raise GitHubError(401, "This endpoint requires you to be authenticated.")
    data = await read_object(request)
    query = data.get("query")
    variables: dict[str, Any] = data.get("variables") or {}
    if not isinstance(query, str) or not _MUTATION.search(query):
        return _errors("testbed: only markPullRequestReadyForReview is implemented", "INTERNAL")
    pull_id = variables.get("id") or variables.get("pullRequestId")
    with state.lock:
        for repo in state.repos.values():
            for pull in repo.pulls.values():
                if node_id("PullRequest", pull.id) == pull_id:
                    require_token(who, repo, "pull_requests", "write")
                    pull.draft = False
                    payload = {"pullRequest": {"id": pull_id, "isDraft": False}}
                    return JSONResponse({"data": {"markPullRequestReadyForReview": payload}})
    return _errors(f"Could not resolve to a node with the global id of '{pull_id}'")


routes = [Route("/graphql", graphql, methods=["POST"])]

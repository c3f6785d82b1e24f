"""Pull request endpoints; PRs share the issue number sequence and live on real branches."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testbed.github import shapes
from testbed.github.state import Pull, Review
from testbed.github.web import (
    body_too_long,
    missing_field,
    ok,
    paginate,
    path_number,
    read_object,
    repo_access,
    required_text,
)

R = "/repos/{owner}/{repo}"
REVIEW_EVENTS = ("COMMENT", "APPROVE", "REQUEST_CHANGES")


async def create_pull(request: Request) -> Response:
    state, repo, token = repo_access(request, "pull_requests", "write")
    data = await read_object(request)
    for name in ("head", "base"):
        required_text(data, "PullRequest", name)
    title = required_text(data, "PullRequest", "title")
    body_too_long("PullRequest", data.get("body"))

    def create() -> Pull:
        return state.create_pull(
            repo,
            title=title,
            head=data["head"],
            base=data["base"],
            body=data.get("body"),
            draft=bool(data.get("draft", False)),
            app=token.installation.app,
            maintainer_can_modify=bool(data.get("maintainer_can_modify", False)),
        )

    pull = await run_in_threadpool(create)
    with state.lock:
        data_out = shapes.pull_request(state.base_url, repo, pull)
    return ok(data_out, 201, headers={"location": data_out["url"]})


async def list_pulls(request: Request) -> Response:
    state, repo, _ = repo_access(request, "pull_requests", "read")
    query = request.query_params
    pulls = state.pulls(
        repo,
        state=query.get("state", "open"),
        head=query.get("head"),
        base=query.get("base"),
    )
    if query.get("direction") == "asc":
        pulls.reverse()
    page, headers = paginate(request, pulls)
    for pull in page:
        await run_in_threadpool(state.refresh_pull, repo, pull)
    with state.lock:
        return ok(
            [shapes.pull_request_simple(state.base_url, repo, p) for p in page], headers=headers
        )


async def get_pull(request: Request) -> Response:
    state, repo, _ = repo_access(request, "pull_requests", "read")
    pull = state.get_pull(repo, path_number(request))
    await run_in_threadpool(state.refresh_pull, repo, pull)
    with state.lock:
        return ok(shapes.pull_request(state.base_url, repo, pull))


async def update_pull(request: Request) -> Response:
    state, repo, _ = repo_access(request, "pull_requests", "write")
    data = await read_object(request)
    body_too_long("PullRequest", data.get("body"))

    def update() -> Pull:
        pull = state.update_pull(
            repo,
            path_number(request),
            title=data.get("title"),
            body=data.get("body"),
            state=data.get("state"),
            base=data.get("base"),
        )
        return state.refresh_pull(repo, pull)

    pull = await run_in_threadpool(update)
    with state.lock:
        return ok(shapes.pull_request(state.base_url, repo, pull))


async def request_reviewers(request: Request) -> Response:
    state, repo, _ = repo_access(request, "pull_requests", "write")
    data = await read_object(request)
    reviewers = data.get("reviewers") or []
    with state.lock:
        pull = state.request_reviewers(repo, path_number(request), reviewers)
        return ok(shapes.pull_request_simple(state.base_url, repo, pull), 201)


async def list_requested_reviewers(request: Request) -> Response:
    state, repo, _ = repo_access(request, "pull_requests", "read")
    with state.lock:
        pull = state.get_pull(repo, path_number(request))
        return ok(
            {
                "users": [shapes.simple_user(state.base_url, u) for u in pull.requested_reviewers],
                "teams": [],
            }
        )


async def create_review(request: Request) -> Response:
    state, repo, token = repo_access(request, "pull_requests", "write")
    data = await read_object(request)
    body = data.get("body") or ""
    if not isinstance(body, str):
        raise missing_field("PullRequestReview", "body")
    body_too_long("PullRequestReview", body)
    event = data.get("event", "COMMENT")
    comments = data.get("comments") or []
    if not isinstance(comments, list) or not all(isinstance(c, dict) for c in comments):
        raise missing_field("PullRequestReview", "comments")
    number = path_number(request)

    def create() -> Review:
        return state.create_review(
            repo,
            number,
            body=body,
            event=str(event),
            comments=comments,
            user=token.installation.app.bot,
            commit_id=data.get("commit_id"),
        )

    review = await run_in_threadpool(create)
    with state.lock:
        pull = state.get_pull(repo, number)
        return ok(shapes.pull_review(state.base_url, repo, pull, review))


async def list_reviews(request: Request) -> Response:
    state, repo, _ = repo_access(request, "pull_requests", "read")
    pull = state.get_pull(repo, path_number(request))
    page, headers = paginate(request, state.reviews(repo, pull.number))
    with state.lock:
        return ok(
            [shapes.pull_review(state.base_url, repo, pull, r) for r in page], headers=headers
        )


async def list_review_comments(request: Request) -> Response:
    state, repo, _ = repo_access(request, "pull_requests", "read")
    pull = state.get_pull(repo, path_number(request))
    items = [c for r in state.reviews(repo, pull.number) for c in r.comments]
    page, headers = paginate(request, items)
    with state.lock:
        return ok(
            [shapes.review_comment(state.base_url, repo, pull, c) for c in page], headers=headers
        )


routes = [
    Route(f"{R}/pulls", create_pull, methods=["POST"]),
    Route(f"{R}/pulls", list_pulls, methods=["GET"]),
    Route(f"{R}/pulls/{{number:int}}", get_pull, methods=["GET"]),
    Route(f"{R}/pulls/{{number:int}}", update_pull, methods=["PATCH"]),
    Route(f"{R}/pulls/{{number:int}}/requested_reviewers", request_reviewers, methods=["POST"]),
    Route(f"{R}/pulls/{{number:int}}/reviews", create_review, methods=["POST"]),
    Route(f"{R}/pulls/{{number:int}}/reviews", list_reviews, methods=["GET"]),
    Route(f"{R}/pulls/{{number:int}}/comments", list_review_comments, methods=["GET"]),
    Route(
        f"{R}/pulls/{{number:int}}/requested_reviewers",
        list_requested_reviewers,
        methods=["GET"],
    ),
]

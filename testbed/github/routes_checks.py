"""Check runs: create, update, get, and list them for a commit, as an App does on GitHub."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testbed.github import shapes
from testbed.github.state import CheckRun
from testbed.github.web import ok, paginate, read_object, repo_access

R = "/repos/{owner}/{repo}"
FIELDS = ("name", "head_sha", "status", "conclusion", "output", "details_url", "external_id")


async def create_check_run(request: Request) -> Response:
    state, repo, token = repo_access(request, "checks", "write")
    data = await read_object(request)
    fields = {k: data[k] for k in FIELDS if k in data}

    def create() -> CheckRun:
        return state.write_check_run(repo, token.installation.app, fields)

    check = await run_in_threadpool(create)
    with state.lock:
        return ok(shapes.check_run(state.base_url, repo, check), 201)


async def update_check_run(request: Request) -> Response:
    state, repo, token = repo_access(request, "checks", "write")
    data = await read_object(request)
    fields = {k: data[k] for k in FIELDS if k in data and k != "head_sha"}
    number: int = request.path_params["check_run_id"]

    def update() -> CheckRun:
        return state.write_check_run(repo, token.installation.app, fields, number)

    check = await run_in_threadpool(update)
    with state.lock:
        return ok(shapes.check_run(state.base_url, repo, check))


async def get_check_run(request: Request) -> Response:
    state, repo, _ = repo_access(request, "checks", "read")
    check = state.get_check_run(repo, request.path_params["check_run_id"])
    with state.lock:
        return ok(shapes.check_run(state.base_url, repo, check))


async def list_for_ref(request: Request) -> Response:
    state, repo, _ = repo_access(request, "checks", "read")
    name = request.query_params.get("check_name")
    ref: str = request.path_params["ref"]
    checks = await run_in_threadpool(state.check_runs, repo, ref, name)
    page, headers = paginate(request, checks)
    with state.lock:
        runs = [shapes.check_run(state.base_url, repo, c) for c in page]
        return ok({"total_count": len(checks), "check_runs": runs}, headers=headers)


routes = [
    Route(f"{R}/check-runs", create_check_run, methods=["POST"]),
    Route(f"{R}/check-runs/{{check_run_id:int}}", update_check_run, methods=["PATCH"]),
    Route(f"{R}/check-runs/{{check_run_id:int}}", get_check_run, methods=["GET"]),
    Route(f"{R}/commits/{{ref:path}}/check-runs", list_for_ref, methods=["GET"]),
]

"""App/installation endpoints, repository metadata, collaborator permission and git refs."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testbed.github import gitops, shapes
from testbed.github.auth import require_app
from testbed.github.errors import GitHubError, forbidden_integration, not_found
from testbed.github.state import GitHubState, Installation, Repo
from testbed.github.web import (
    get_state,
    identity,
    no_content,
    ok,
    paginate,
    read_object,
    repo_access,
)

R = "/repos/{owner}/{repo}"


# App (JWT) ----------------------------------------------------------------------------


async def get_app(request: Request) -> Response:
    state = get_state(request)
    app = require_app(identity(request))
    with state.lock:
        data = shapes.integration(state.base_url, app)
        data["installations_count"] = sum(
            1 for i in state.installations.values() if i.app.id == app.id
        )
        return ok(data)


def _own_installation(state: GitHubState, request: Request) -> Installation:
    app = require_app(identity(request))
    inst = state.installations.get(request.path_params["installation_id"])
    if inst is None or inst.app.id != app.id:
        raise not_found()
    return inst


async def list_installations(request: Request) -> Response:
    state = get_state(request)
    app = require_app(identity(request))
    with state.lock:
        items = [i for i in state.installations.values() if i.app.id == app.id]
        page, headers = paginate(request, items)
        return ok([shapes.installation(state.base_url, i) for i in page], headers=headers)


async def get_installation(request: Request) -> Response:
    state = get_state(request)
    with state.lock:
        return ok(shapes.installation(state.base_url, _own_installation(state, request)))


async def create_access_token(request: Request) -> Response:
    state = get_state(request)
    data = await read_object(request)
    with state.lock:
        inst = _own_installation(state, request)
        token = state.create_token(
            inst,
            repositories=data.get("repositories"),
            repository_ids=data.get("repository_ids"),
            permissions=data.get("permissions"),
        )
        repos = [r for r in state.repos.values() if token.repo_ids and r.id in token.repo_ids]
        return ok(shapes.installation_token(state.base_url, token, repos), 201)


async def get_repo_installation(request: Request) -> Response:
    state = get_state(request)
    app = require_app(identity(request))
    with state.lock:
        repo = state.find_repo(request.path_params["owner"], request.path_params["repo"])
        inst = state.installation_for(app, repo) if repo is not None else None
        if inst is None:
            raise not_found()
        return ok(shapes.installation(state.base_url, inst))


# Installation (token) -----------------------------------------------------------------


async def installation_repositories(request: Request) -> Response:
    state = get_state(request)
    who = identity(request)
    if who is None:
        raise GitHubError(401, "Requires authentication")
    if who.token is None:
        raise forbidden_integration()
    token = who.token
    with state.lock:
        repos = sorted((r for r in state.repos.values() if token.covers(r)), key=lambda r: r.id)
        page, headers = paginate(request, repos)
        return ok(
            {
                "total_count": len(repos),
                "repository_selection": token.installation.repository_selection,
                "repositories": [shapes.repository(state.base_url, r) for r in page],
            },
            headers=headers,
        )


async def get_repo(request: Request) -> Response:
    state, repo, _ = repo_access(request, "metadata", "read")
    with state.lock:
        return ok(shapes.full_repository(state.base_url, repo))


async def collaborator_permission(request: Request) -> Response:
    state, repo, _ = repo_access(request, "metadata", "read")
    login = request.path_params["username"]
    with state.lock:
        permission, role = state.permission(repo, login)
        user = state.user(login)
        return ok(shapes.collaborator_permission(state.base_url, repo, user, permission, role))


# Git refs -----------------------------------------------------------------------------


def _full_ref(short: str) -> str:
    return short if short.startswith("refs/") else f"refs/{short}"


async def _ref_json(state: GitHubState, repo: Repo, ref: str) -> dict[str, Any] | None:
    refs = await run_in_threadpool(gitops.list_refs, repo.git_dir, ref)
    for info in refs:
        if info.ref == ref:
            return shapes.git_ref(state.base_url, repo, info)
    return None


async def get_ref(request: Request) -> Response:
    state, repo, _ = repo_access(request, "contents", "read")
    found = await _ref_json(state, repo, _full_ref(request.path_params["ref"]))
    if found is None:
        raise not_found()
    return ok(found)


async def matching_refs(request: Request) -> Response:
    state, repo, _ = repo_access(request, "contents", "read")
    prefix = _full_ref(request.path_params["ref"]) if request.path_params["ref"] else "refs/"
    refs = await run_in_threadpool(gitops.list_refs, repo.git_dir, prefix)
    return ok([shapes.git_ref(state.base_url, repo, r) for r in refs])


async def legacy_refs(request: Request) -> Response:
    """`GET /git/refs/{ref}`: one ref if the name is exact, else the matching list."""
    state, repo, _ = repo_access(request, "contents", "read")
    prefix = _full_ref(request.path_params["ref"]) if request.path_params["ref"] else "refs/"
    refs = await run_in_threadpool(gitops.list_refs, repo.git_dir, prefix)
    for info in refs:
        if info.ref == prefix:
            return ok(shapes.git_ref(state.base_url, repo, info))
    if not refs:
        raise not_found()
    return ok([shapes.git_ref(state.base_url, repo, r) for r in refs])


def _check_sha(repo: Repo, sha: object) -> str:
    if not isinstance(sha, str) or gitops.object_type(repo.git_dir, sha) is None:
        raise GitHubError(422, "Object does not exist")
    return sha


async def create_ref(request: Request) -> Response:
    state, repo, _ = repo_access(request, "contents", "write")
    data = await read_object(request)
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/") or ref.count("/") < 2:
        raise GitHubError(
            422, "Reference name must start with 'refs/' and have at least two slashes."
        )

    def create() -> None:
        sha = _check_sha(repo, data.get("sha"))
        if gitops.ref_exists(repo.git_dir, ref):
            raise GitHubError(422, "Reference already exists")
        try:
            gitops.update_ref(repo.git_dir, ref, sha, gitops.ZERO_SHA)
        except gitops.GitError as exc:
            raise GitHubError(422, "Reference already exists") from exc

    await run_in_threadpool(create)
    found = await _ref_json(state, repo, ref)
    assert found is not None
    return ok(found, 201, headers={"location": found["url"]})


async def update_ref(request: Request) -> Response:
    state, repo, _ = repo_access(request, "contents", "write")
    data = await read_object(request)
    ref = _full_ref(request.path_params["ref"])
    force = bool(data.get("force", False))

    def update() -> None:
        sha = _check_sha(repo, data.get("sha"))
        old = gitops.resolve(repo.git_dir, ref)
        if old is None or not gitops.ref_exists(repo.git_dir, ref):
            raise GitHubError(422, "Reference does not exist")
        if not force and not gitops.is_ancestor(repo.git_dir, old, sha):
            raise GitHubError(422, "Update is not a fast forward")
        gitops.update_ref(repo.git_dir, ref, sha)

    await run_in_threadpool(update)
    found = await _ref_json(state, repo, ref)
    assert found is not None
    return ok(found)


async def delete_ref(request: Request) -> Response:
    _state, repo, _ = repo_access(request, "contents", "write")
    ref = _full_ref(request.path_params["ref"])

    def delete() -> None:
        if not gitops.ref_exists(repo.git_dir, ref):
            raise GitHubError(422, "Reference does not exist")
        gitops.delete_ref(repo.git_dir, ref)

    await run_in_threadpool(delete)
    return no_content()


routes = [
    Route("/app", get_app, methods=["GET"]),
    Route("/app/installations", list_installations, methods=["GET"]),
    Route("/app/installations/{installation_id:int}", get_installation, methods=["GET"]),
    Route(
        "/app/installations/{installation_id:int}/access_tokens",
        create_access_token,
        methods=["POST"],
    ),
    Route("/installation/repositories", installation_repositories, methods=["GET"]),
    Route(f"{R}/installation", get_repo_installation, methods=["GET"]),
    Route(R, get_repo, methods=["GET"]),
    Route(f"{R}/collaborators/{{username}}/permission", collaborator_permission, methods=["GET"]),
    Route(f"{R}/git/ref/{{ref:path}}", get_ref, methods=["GET"]),
    Route(f"{R}/git/matching-refs/{{ref:path}}", matching_refs, methods=["GET"]),
    Route(f"{R}/git/refs", create_ref, methods=["POST"]),
    Route(f"{R}/git/refs/{{ref:path}}", legacy_refs, methods=["GET"]),
    Route(f"{R}/git/refs/{{ref:path}}", update_ref, methods=["PATCH"]),
    Route(f"{R}/git/refs/{{ref:path}}", delete_ref, methods=["DELETE"]),
]

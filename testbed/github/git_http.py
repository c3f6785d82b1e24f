"""Smart-HTTP git hosting: `git http-backend` as CGI behind installation-token Basic auth.

The bot clones and pushes with `x-access-token:<token>` exactly as against github.com; a bad or
expired token gets the 401 + `WWW-Authenticate` that makes `git` fail.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testbed.github.auth import Identity
from testbed.github.errors import GitHubError
from testbed.github.gitops import git_env
from testbed.github.state import utcnow
from testbed.github.web import IDENTITY_KEY, get_state

CHALLENGE = {"WWW-Authenticate": 'Basic realm="GitHub"'}


def _deny(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text, status_code=status, headers=headers, media_type="text/plain")


def parse_cgi(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Split CGI output into (status, headers, body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(sep)
        if found:
            break
    else:
        return 502, [], output
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split(" ", 1)[0])
        elif name:
            headers.append((name.strip(), value.strip()))
    return status, headers, body


async def git_endpoint(request: Request) -> Response:
    state = get_state(request)
    owner, name, rest = (
        request.path_params["owner"],
        request.path_params["repo"],
        request.path_params["rest"],
    )
    who = request.scope.get(IDENTITY_KEY)
    if who is None or isinstance(who, GitHubError) or not isinstance(who, Identity):
        return _deny(401, "Invalid username or token.", CHALLENGE)
    token = who.token
    repo = state.find_repo(owner, name)
    if token is None:
        return _deny(401, "Invalid username or token.", CHALLENGE)
    if repo is None or not token.covers(repo):
        return _deny(404, "Repository not found.")
    push = rest == "git-receive-pack" or request.query_params.get("service") == "git-receive-pack"
    if not token.allows("contents", "write" if push else "read"):
        return _deny(403, f"Permission to {repo.full_name}.git denied to {who.app.bot.login}.")

    body = await request.body()
    relative = repo.git_dir.relative_to(state.root).as_posix()
    env = git_env(
        {
            "GIT_PROJECT_ROOT": str(state.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{relative}/{rest}",
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.url.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": request.client.host if request.client else "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "TESTBED_WORKFLOWS": token.permissions.get("workflows", ""),
        }
    )
    for header, var in (
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("accept", "HTTP_ACCEPT"),
    ):
        if header in request.headers:
            env[var] = request.headers[header]
    if "git-protocol" in request.headers:
        env["HTTP_GIT_PROTOCOL"] = request.headers["git-protocol"]
    proc = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate(body)
    if proc.returncode != 0 and not out:
        return _deny(500, err.decode(errors="replace"))
    status, headers, content = parse_cgi(out)
    if push and rest == "git-receive-pack" and status == 200:
        with state.lock:
            repo.pushed_at = utcnow()
    response = Response(content, status_code=status)
    for key, value in headers:
        if key.lower() != "content-length":
            response.headers.append(key, value)
    return response


routes = [
    Route("/{owner}/{repo}.git/{rest:path}", git_endpoint, methods=["GET", "POST"]),
]

"""Real git over smart HTTP against the testbed, with installation-token Basic auth."""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
from pathlib import Path

import httpx

from testbed.github.state import InstallationToken
from tests.testbed.conftest import World


def git(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd or Path.cwd()),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "true",
        "GIT_AUTHOR_NAME": "baro",
        "GIT_AUTHOR_EMAIL": "baro@example.com",
        "GIT_COMMITTER_NAME": "baro",
        "GIT_COMMITTER_EMAIL": "baro@example.com",
    }
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc


def basic_header(token: InstallationToken | str) -> str:
    value = token.token if isinstance(token, InstallationToken) else token
    return "Authorization: Basic " + base64.b64encode(f"x-access-token:{value}".encode()).decode()


def commit_file(work: Path, name: str, content: str) -> str:
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    git("add", name, cwd=work)
    git("commit", "-q", "-m", f"add {name}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def test_clone_push_and_refs_api(world: World, tmp_path: Path) -> None:
    token = world.state.create_token(world.installation)
    work = tmp_path / "clone"
    git("clone", "-q", world.server.authed_clone_url(world.repo, token), str(work), cwd=tmp_path)
    assert (work / "README.md").read_text() == "# widgets\n"
    assert (work / "src" / "app.py").exists()

    sha = commit_file(work, "story.txt", "done\n")
    git("push", "-q", "origin", "HEAD:refs/heads/baro/story-1", cwd=work)
    assert world.state.branch_sha(world.repo, "baro/story-1") == sha
    assert world.state.read_file(world.repo, "baro/story-1", "story.txt") == b"done\n"

    response = httpx.get(
        f"{world.url}/repos/acme/widgets/git/ref/heads/baro/story-1",
        headers={"Authorization": f"token {token.token}"},
    )
    assert response.status_code == 200
    assert response.json()["object"]["sha"] == sha
    assert any(r.path.endswith("/git-receive-pack") for r in world.state.request_log("POST"))


def test_extra_header_credentials(world: World, tmp_path: Path) -> None:
    token = world.state.create_token(world.installation)
    header = basic_header(token)
    work = tmp_path / "clone"
    git(
        "-c",
        f"http.extraHeader={header}",
        "clone",
        "-q",
        world.server.clone_url(world.repo),
        str(work),
        cwd=tmp_path,
    )
    sha = commit_file(work, "extra.txt", "x\n")
    git(
        "-c",
        f"http.extraHeader={header}",
        "push",
        "-q",
        "origin",
        "HEAD:refs/heads/extra",
        cwd=work,
    )
    assert world.state.branch_sha(world.repo, "extra") == sha


def test_bad_tokens_fail(world: World, tmp_path: Path) -> None:
    bad_url = world.server.authed_clone_url(world.repo, "ghs_" + "0" * 36)
    failed = git("clone", "-q", bad_url, str(tmp_path / "bad"), cwd=tmp_path, check=False)
    assert failed.returncode != 0
    assert "Authentication failed" in failed.stderr or "401" in failed.stderr

    raw = httpx.get(f"{world.url}/acme/widgets.git/info/refs?service=git-upload-pack")
    assert raw.status_code == 401
    assert raw.headers["www-authenticate"] == 'Basic realm="GitHub"'

    token = world.state.create_token(world.installation)
    work = tmp_path / "clone"
    git("clone", "-q", world.server.authed_clone_url(world.repo, token), str(work), cwd=tmp_path)
    commit_file(work, "late.txt", "late\n")
    world.state.expire_token(token)
    pushed = git("push", "-q", "origin", "HEAD:refs/heads/late", cwd=work, check=False)
    assert pushed.returncode != 0
    assert world.state.branch_sha(world.repo, "late") is None
    git("remote", "set-url", "origin", bad_url, cwd=work)
    assert git("push", "-q", "origin", "HEAD:refs/heads/late", cwd=work, check=False).returncode
    assert world.state.branch_sha(world.repo, "late") is None


def test_workflow_push_rejected(world: World, tmp_path: Path) -> None:
    token = world.state.create_token(world.installation)
    work = tmp_path / "clone"
    git("clone", "-q", world.server.authed_clone_url(world.repo, token), str(work), cwd=tmp_path)
    commit_file(work, ".github/workflows/ci.yml", "on: push\n")
    pushed = git("push", "origin", "HEAD:refs/heads/wf", cwd=work, check=False)
    assert pushed.returncode != 0
    assert (
        "refusing to allow a GitHub App to create or update workflow "
        "`.github/workflows/ci.yml` without `workflows` permission"
    ) in pushed.stderr
    assert world.state.branch_sha(world.repo, "wf") is None

    privileged = world.state.create_installation(
        world.app,
        "acme",
        repositories=[world.repo],
        permissions={"contents": "write", "metadata": "read", "workflows": "write"},
    )
    strong = world.state.create_token(privileged)
    git("remote", "set-url", "origin", world.server.authed_clone_url(world.repo, strong), cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/wf", cwd=work)
    assert world.state.branch_sha(world.repo, "wf") is not None


def test_gzip_request_body(world: World) -> None:
    """git gzips large upload-pack requests; http-backend must get Content-Encoding."""
    token = world.state.create_token(world.installation)
    sha = world.state.branch_sha(world.repo, "main")
    want = f"want {sha}\n"
    body = f"{len(want) + 4:04x}{want}00000009done\n".encode()
    response = httpx.post(
        f"{world.url}/acme/widgets.git/git-upload-pack",
        content=gzip.compress(body),
        headers={
            "Authorization": basic_header(token).split(": ", 1)[1],
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-git-upload-pack-result"
    assert b"PACK" in response.content

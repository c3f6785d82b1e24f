"""The /_testbed control API and `python -m testbed.github`, as the demo drives them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from githubkit import AppAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.webhooks import verify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from testbed.github.server import bind_socket, running_testbed
from testbed.github.state import GitHubState

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A tiny webhook endpoint on loopback that records what it gets."""
    got: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: Request) -> JSONResponse:
        got.append((dict(request.headers), await request.body()))
        return JSONResponse({"ok": True})

    sock = bind_socket()
    app = Starlette(routes=[Route("/webhook", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/webhook", got
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_control_api_round_trip(receiver: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    hook_url, got = receiver
    state = GitHubState()
    with running_testbed(state) as tb, httpx.Client(base_url=f"{tb.url}/_testbed") as c:
        app = c.post("/apps", json={"slug": "demo-bot", "webhook_secret": "shh"}).json()
        inst = c.post("/installations", json={"app_id": app["id"], "account": "acme"}).json()
        repo = c.post(
            "/repos",
            json={
                "owner": "acme",
                "name": "demo",
                "files": {"README.md": "# demo\n"},
                "installation_id": inst["id"],
            },
        ).json()
        assert repo["clone_url"] == f"{tb.url}/acme/demo.git"
        issue = c.post(
            "/repos/acme/demo/issues", json={"title": "Do X", "body": "pls", "user": "alice"}
        ).json()
        assert (
            c.put("/repos/acme/demo/permissions/alice", json={"permission": "write"}).json()[
                "permission"
            ]
            == "write"
        )

        sent = c.post(
            "/webhooks",
            json={
                "url": hook_url,
                "event": "issues.labeled",
                "owner": "acme",
                "repo": "demo",
                "number": issue["number"],
                "label": "baro",
                "sender": "alice",
            },
        ).json()
        assert sent["status"] == 200
        headers, body = got[-1]
        assert headers["x-github-event"] == "issues"
        assert verify("shh", body, headers["x-hub-signature-256"])
        assert json.loads(body)["installation"]["id"] == inst["id"]
        assert c.get(f"/repos/acme/demo/issues/{issue['number']}/labels").json() == ["baro"]

        fault = c.post(
            "/faults", json={"preset": "secondary_rate_limit", "method": "POST", "retry_after": 2}
        )
        assert fault.status_code == 201 and fault.json()["status"] == 403
        token = c.post(f"/installations/{inst['id']}/tokens", json={}).json()["token"]
        api = httpx.post(
            f"{tb.url}/repos/acme/demo/issues/{issue['number']}/comments",
            json={"body": "hi"},
            headers={"Authorization": f"token {token}"},
        )
        assert api.status_code == 403 and api.headers["retry-after"] == "2"
        api = httpx.post(
            f"{tb.url}/repos/acme/demo/issues/{issue['number']}/comments",
            json={"body": "hi"},
            headers={"Authorization": f"token {token}"},
        )
        assert api.status_code == 201
        comments = c.get(f"/repos/acme/demo/issues/{issue['number']}/comments").json()
        assert [x["user"]["login"] for x in comments] == ["demo-bot[bot]"]
        log = c.get("/requests", params={"method": "POST"}).json()
        assert [r["status"] for r in log] == [403, 201]
        assert c.get("/repos/acme/demo/branches").json().keys() == {"main"}
        assert c.get("/repos/acme/demo/file", params={"path": "README.md"}).text == "# demo\n"
        assert c.get("/repos/acme/demo/pulls").json() == []
        assert c.post("/reset", json={}).status_code == 204
        assert c.get("/state").json()["repos"] == []
    state.close()


def test_module_entry_point(tmp_path: Path) -> None:
    state_file = tmp_path / "app.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.github", "--port", "0", "--state-file", str(state_file)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not state_file.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(state_file.read_text())
        assert set(info) >= {"app_id", "slug", "private_key_pem", "webhook_secret", "base_url"}
        for _ in range(200):
            try:
                if httpx.get(f"{info['base_url']}/_testbed/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        gh = GitHub(
            AppAuthStrategy(str(info["app_id"]), info["private_key_pem"]),
            base_url=info["base_url"],
            cache_strategy=MemCacheStrategy(),
            auto_retry=False,
        )
        app = gh.rest.apps.get_authenticated().parsed_data
        assert app.slug == info["slug"] == "baro-bot"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()

"""Real bot processes (web, worker) against the testbed GitHub, scripted models and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from testbed.github.delivery import (
    issue_comment_created_payload,
    issue_labeled_payload,
    pull_request_review_comment_payload,
)
from testbed.github.routes_hooks import deliver_recorded
from testbed.github.server import TestbedServer
from testbed.github.state import App, Installation, Issue, Repo
from testbed.waiting import wait_for as await_until
from testbed.waiting import wait_until
from tests.conftest import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[2]

PLANNER_MODEL = {
    "name": "planner-model",
    "protocol": "openai-chat",
    "base_url": "",
    "model_id": "deepseek-v4-pro",
    "api_key_env": "BARO_TEST_PLANNER_KEY",
}
ROUTING = {
    "planner": "planner-model",
    "light": "planner-model",
    "standard": "planner-model",
    "heavy": "planner-model",
}
PLANNER_KEY = "sk-test-planner-key-0123456789"


@dataclass
class Bot:
    """`baro-bot web` and `baro-bot worker` as subprocesses, with their logs on disk."""

    env: dict[str, str]
    web_url: str
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        kind = name.split("-", 1)[0]
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "app.cli", kind, *args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def start_all(self, runners: int = 0) -> None:
        port = self.web_url.rsplit(":", 1)[1]
        self.start("web", "--port", port)
        self.start("worker")
        for i in range(runners):
            self.start(f"runner-{i}" if i else "runner")
        try:
            wait_until(self._web_up, 30, "the web process")
        except AssertionError:
            self.stop()  # a failed start must not leave processes behind
            raise

    def _web_up(self) -> bool:
        proc = self.procs["web"]
        if proc.poll() is not None:
            raise AssertionError(f"web exited: {self.logs('web')}")
        try:
            return httpx.get(self.web_url + "/healthz", timeout=1).status_code in (200, 503)
        except httpx.TransportError:
            return False

    def logs(self, kind: str | None = None) -> str:
        names = [kind] if kind else sorted(self.procs)
        return "\n".join((self.log_dir / f"{n}.log").read_text() for n in names)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def bot_env(
    testbed: TestbedServer,
    app: App,
    redis_url: str,
    model_url: str | None = None,
    **extra: str,
) -> dict[str, str]:
    key_file = Path(tempfile.mkdtemp(prefix="baro-key-")) / "app.pem"
    key_file.write_text(app.private_key_pem)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BARO_") and k != "PYTEST_ADDOPTS"
    }
    env.update(
        {
            "BARO_GITHUB_APP_ID": str(app.id),
            "BARO_GITHUB_PRIVATE_KEY_FILE": str(key_file),
            "BARO_GITHUB_WEBHOOK_SECRET": app.webhook_secret,
            "BARO_GITHUB_APP_SLUG": app.slug,
            "BARO_GITHUB_API_URL": testbed.url,
            "BARO_REDIS_URL": redis_url,
            "BARO_GITHUB_WRITE_SPACING": "0",
            "BARO_LOG_LEVEL": "INFO",
            "BARO_LOG_FORMAT": "json",  # what production ships; tests/e2e/test_logs.py checks it
            "BARO_RUNNER_DATA_DIR": tempfile.mkdtemp(prefix="baro-runner-", dir="/var/tmp"),
            # Tests that want the redelivery reconciler turn it on (test_redelivery.py).
            "BARO_REDELIVERY_INTERVAL_SECONDS": "0",
        }
    )
    if model_url is not None:
        env["BARO_MODELS"] = json.dumps([{**PLANNER_MODEL, "base_url": model_url + "/v1"}])
        env["BARO_ROUTING"] = json.dumps(ROUTING)
        env["BARO_TEST_PLANNER_KEY"] = PLANNER_KEY
    env.update(extra)
    return env


def new_bot(env: dict[str, str]) -> Bot:
    return Bot(
        env=env,
        web_url=f"http://127.0.0.1:{free_port()}",
        log_dir=Path(tempfile.mkdtemp(prefix="baro-logs-")),
    )


@dataclass
class World:
    """One App installed on one account, with helpers to make repos and deliver events."""

    testbed: TestbedServer
    app: App
    installation: Installation
    owner: str = "octo-org"
    maintainer: str = "maintainer"

    @property
    def state(self) -> Any:
        return self.testbed.state

    def new_repo(self, files: dict[str, str | bytes] | None = None) -> Repo:
        name = f"demo-{uuid.uuid4().hex[:8]}"
        repo = self.state.create_repo(
            self.owner,
            name,
            files or {"README.md": "# Demo\n", "calc.py": "def add(a, b):\n    return a + b\n"},
            installation=self.installation,
        )
        self.state.set_permission(repo, self.maintainer, "write")
        return repo

    def new_issue(self, repo: Repo, title: str = "Add subtraction", body: str = "") -> Issue:
        issue: Issue = self.state.create_issue(repo, title, body or "Please add sub().", "reporter")
        return issue

    def bot_comments(self, repo: Repo, number: int) -> list[Any]:
        return [c for c in self.state.comments(repo, number) if c.user.login == self.app.bot.login]

    async def deliver_label(
        self,
        bot: Bot,
        repo: Repo,
        number: int,
        *,
        sender: str | None = None,
        label: str = "baro",
        delivery_id: str | None = None,
    ) -> httpx.Response:
        payload = issue_labeled_payload(
            self.state, repo, number, label, sender or self.maintainer, self.installation.id
        )
        return await self.post(bot, "issues", payload, delivery_id)

    async def deliver_comment(
        self, bot: Bot, repo: Repo, number: int, body: str, *, commenter: str | App | None = None
    ) -> httpx.Response:
        payload = issue_comment_created_payload(
            self.state, repo, number, body, commenter or self.maintainer, self.installation.id
        )
        return await self.post(bot, "issue_comment", payload)

    async def deliver_review_comment(
        self, bot: Bot, repo: Repo, number: int, body: str, *, path: str, line: int
    ) -> httpx.Response:
        payload = pull_request_review_comment_payload(
            self.state,
            repo,
            number,
            body,
            self.maintainer,
            self.installation.id,
            path=path,
            line=line,
        )
        return await self.post(bot, "pull_request_review_comment", payload)

    async def post(
        self, bot: Bot, event: str, payload: Any, delivery_id: str | None = None
    ) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await deliver_recorded(
                self.state,
                self.app,
                client,
                bot.web_url + "/webhooks/github",
                event,
                payload,
                delivery_id,
            )


TERMINAL = ("done", "checkpoint", "failed", "cancelled")


def tracking(world: World, repo: Any, number: int) -> Any:
    """The bot's tracking comment on an issue (found by its hidden run marker)."""
    found = [c for c in world.bot_comments(repo, number) if "<!-- baro:run:" in c.body]
    return found[0] if found else None


def run_state(redis_url: str, body: str) -> dict[str, Any]:
    """The run record behind a tracking comment, as stored in Redis."""
    run_id = body.split("<!-- baro:run:", 1)[1].split(" -->", 1)[0]
    client = Redis.from_url(redis_url)
    raw = client.get(f"baro:run:{run_id}")
    client.close()
    assert raw is not None
    data: dict[str, Any] = json.loads(raw)
    return data


def current(world: World, bot: Bot, repo: Any, number: int) -> dict[str, Any] | None:
    comment = tracking(world, repo, number)
    if comment is None:
        return None
    return run_state(bot.env["BARO_REDIS_URL"], comment.body)


def _run_ready(
    world: World, bot: Bot, repo: Any, number: int, check: Callable[[dict[str, Any]], Any] | None
) -> Callable[[], dict[str, Any] | None]:
    def ready() -> dict[str, Any] | None:
        state = current(world, bot, repo, number)
        if state is None:
            return None
        ok = check(state) if check else state["state"] in TERMINAL
        return state if ok else None

    return ready


def _explained(exc: AssertionError, world: World, bot: Bot, repo: Any, number: int) -> str:
    """A timeout's message with the run's state and the processes' logs."""
    state = current(world, bot, repo, number)
    shown = {k: state[k] for k in ("state", "failure", "stories")} if state else None
    logs = bot.logs()[-15000:]
    return f"{exc}\n{json.dumps(shown, indent=1, default=str)}\n{logs}"


async def await_run(
    world: World,
    bot: Bot,
    repo: Any,
    number: int,
    check: Callable[[dict[str, Any]], Any] | None = None,
    timeout: float = 90,
    what: str = "the run to end",
) -> dict[str, Any]:
    """Poll the run record until `check(state)` (default: a terminal state), without blocking
    the event loop; on timeout the error shows the run's state and the processes' logs."""
    try:
        return await await_until(_run_ready(world, bot, repo, number, check), timeout, what)
    except AssertionError as exc:
        raise AssertionError(_explained(exc, world, bot, repo, number)) from None


def wait_run(
    world: World,
    bot: Bot,
    repo: Any,
    number: int,
    check: Callable[[dict[str, Any]], Any] | None = None,
    timeout: float = 90,
    what: str = "the run to end",
) -> dict[str, Any]:
    """`await_run` for sync tests (it blocks the thread while it polls)."""
    try:
        return wait_until(_run_ready(world, bot, repo, number, check), timeout, what)
    except AssertionError as exc:
        raise AssertionError(_explained(exc, world, bot, repo, number)) from None


wait_for = wait_until
"""The blocking poll under its old name, for sync callers written before testbed/waiting.py;
async tests await `testbed.waiting.wait_for` (or `await_run`) instead."""

"""The orchestrator's parts in this process, wired as `baro-bot worker` wires them, against a
real Redis and the testbed GitHub: no process start-up, so a decision path is a fast test.

`Bench` holds the worker's services (`WorkerServices.build`, what arq's start-up makes) and
the arq ctx its jobs take, a repository with the App installed, and helpers that turn
testbed webhook payloads into the `Trigger`s the web process would enqueue.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from arq.connections import ArqRedis
from pydantic import SecretStr

from app.core.run import Run
from app.core.triggers import Trigger
from app.queue import ORCHESTRATOR_QUEUE, RUNNER_QUEUE, connect
from app.services import SERVICES, Services
from app.settings import Settings
from app.web.webhooks import BotIdentity, Ignored, route
from app.worker.main import WorkerServices
from testbed.github.delivery import issue_comment_created_payload, issue_labeled_payload
from testbed.github.server import TestbedServer, running_testbed
from testbed.github.state import App, GitHubState, Installation, Issue, Repo

OWNER = "octo-org"
MAINTAINER = "maintainer"


@dataclass
class Hub:
    """The testbed GitHub with one App installed on one account."""

    testbed: TestbedServer
    app: App
    installation: Installation

    @property
    def state(self) -> GitHubState:
        return self.testbed.state


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with GitHubState() as state, running_testbed(state) as testbed:
        app = state.create_app("baro-worker")
        yield Hub(testbed, app, state.create_installation(app, OWNER))


def worker_settings(hub: Hub, redis_url: str, **extra: Any) -> Settings:
    """What `baro-bot worker` reads from its environment, pointed at the testbed."""
    base: dict[str, Any] = {
        "github_app_id": hub.app.id,
        "github_private_key": SecretStr(hub.app.private_key_pem),
        "github_webhook_secret": SecretStr(hub.app.webhook_secret),
        "github_app_slug": hub.app.slug,
        "github_api_url": hub.testbed.url,
        "redis_url": redis_url,
        "github_write_spacing": 0,
        "comment_debounce_seconds": 0,  # every render is written at once: tests read it
    }
    return Settings(**{**base, **extra})


@dataclass
class Bench:
    hub: Hub
    settings: Settings
    services: WorkerServices
    redis: ArqRedis

    @property
    def state(self) -> GitHubState:
        return self.hub.state

    @property
    def ctx(self) -> dict[str, Any]:
        """An arq job's ctx as the worker's start-up leaves it."""
        return {SERVICES: self.services, "job_id": "test-job", "job_try": 1}

    @property
    def bot_login(self) -> str:
        return self.hub.app.bot.login

    # GitHub

    def new_repo(self, writers: tuple[str, ...] = (MAINTAINER,)) -> Repo:
        repo = self.state.create_repo(
            OWNER,
            f"w-{uuid.uuid4().hex[:8]}",
            {"README.md": "# w\n", "calc.py": "def add(a, b):\n    return a + b\n"},
            installation=self.hub.installation,
        )
        for login in writers:
            self.state.set_permission(repo, login, "write")
        return repo

    def new_issue(self, repo: Repo, title: str = "Add subtraction") -> Issue:
        issue: Issue = self.state.create_issue(repo, title, "Please add sub().", "reporter")
        return issue

    def bot_comments(self, repo: Repo, number: int) -> list[Any]:
        return [c for c in self.state.comments(repo, number) if c.user.login == self.bot_login]

    def tracking_comments(self, repo: Repo, number: int) -> list[Any]:
        return [c for c in self.bot_comments(repo, number) if "<!-- baro:run:" in c.body]

    def replies(self, repo: Repo, number: int) -> list[str]:
        """The bot's comments that are not the tracking comment."""
        return [c.body for c in self.bot_comments(repo, number) if "<!-- baro:run:" not in c.body]

    # triggers, as the web process makes them from a delivery

    def _route(self, event: str, payload: Any, delivery_id: str | None) -> Trigger:
        bot = BotIdentity(self.hub.app.id, self.hub.app.slug, self.settings.trigger_label)
        body = json.dumps(payload).encode()
        found = route(event, delivery_id or str(uuid.uuid4()), body, bot)
        assert not isinstance(found, Ignored), found
        return found

    def label(
        self,
        repo: Repo,
        number: int,
        sender: str = MAINTAINER,
        label: str = "baro",
        delivery_id: str | None = None,
    ) -> Trigger:
        payload = issue_labeled_payload(
            self.state, repo, number, label, sender, self.hub.installation.id
        )
        return self._route("issues", payload, delivery_id)

    def comment(self, repo: Repo, number: int, body: str, sender: str = MAINTAINER) -> Trigger:
        payload = issue_comment_created_payload(
            self.state, repo, number, body, sender, self.hub.installation.id
        )
        return self._route("issue_comment", payload, None)

    # Redis

    async def run(self, run_id: str) -> Run:
        return await self.services.store.get(run_id)

    async def queued(self, queue: str = ORCHESTRATOR_QUEUE) -> list[str]:
        """The ids of the jobs waiting on `queue`, sorted."""
        jobs = await self.redis.queued_jobs(queue_name=queue)
        return sorted(job.job_id or "" for job in jobs)

    async def runner_jobs(self) -> list[str]:
        return await self.queued(RUNNER_QUEUE)


async def open_bench(hub: Hub, redis_url: str, **settings: Any) -> Bench:
    config = worker_settings(hub, redis_url, **settings)
    redis = connect(config.redis_url)
    services = WorkerServices.build(Services.open(config, redis))
    return Bench(hub, config, services, redis)


@pytest.fixture
async def bench(hub: Hub, redis_url: str) -> AsyncIterator[Bench]:
    opened = await open_bench(hub, redis_url)
    yield opened
    await opened.services.close()
    await opened.redis.aclose(close_connection_pool=True)

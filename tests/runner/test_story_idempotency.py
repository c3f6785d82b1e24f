"""`StoryRunner.run_story` under at-least-once delivery, in process: real Redis, the testbed
GitHub (git over smart HTTP), scripted models and the bubblewrap sandbox.

A repeated delivery of a landed story, a retry after a crash that happened after the push,
and a stale attempt must never produce a second commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from githubkit.cache import MemCacheStrategy
from pydantic import SecretStr
from redis.asyncio import Redis

from app.core.plan import Plan
from app.core.run import Run, StoryRecord
from app.github import GitHubGateway
from app.llm.prices import load_prices
from app.settings import Settings
from app.store import RunStore
from runner.sandbox import SandboxPolicy, make_sandbox
from runner.slots import AgentSlots
from runner.story import StoryRunner
from runner.workspace import Workspaces
from testbed.github.server import TestbedServer, running_testbed
from testbed.github.state import App, GitHubState, Installation, Repo
from testbed.models.harness import RunningModelServer, running_model_server

MODEL_KEY = "sk-test-story-key-0123456789"
BRANCH = "baro/issue-1-idempotent"
RUN_ID = "ridempotent1"
STORY_TITLE = "Write the idem file"

PLAN: dict[str, Any] = {
    "summary": "One file.",
    "design_note": "At the repository root.",
    "stories": [
        {
            "id": "S1",
            "title": STORY_TITLE,
            "description": "Create idem.txt.",
            "depends_on": [],
            "writes": ["idem.txt"],
            "acceptance": ["idem.txt exists"],
            "tests": ["grep -q idem idem.txt"],
            "tier": "light",
        },
        {
            "id": "S2",
            "title": "Another file",
            "description": "Create other.txt.",
            "depends_on": [],
            "writes": ["other.txt"],
            "acceptance": ["other.txt exists"],
            "tier": "light",
        },
    ],
}
SCRIPT: dict[str, Any] = {
    "rules": [
        {
            "name": "S1",
            "match": {"first_user": f"Implement story S1: {STORY_TITLE}"},
            "turns": [
                {
                    "tool_calls": [
                        {
                            "name": "editor",
                            "arguments": {
                                "command": "create",
                                "path": "idem.txt",
                                "file_text": "idem\n",
                            },
                        }
                    ],
                    "usage": {"input": 500, "output": 40},
                },
                {
                    "tool_calls": [{"name": "finish", "arguments": {"summary": "Added idem."}}],
                    "usage": {"input": 600, "cached": 500, "output": 10},
                },
            ],
        }
    ]
}


@dataclass
class Hub:
    state: GitHubState
    testbed: TestbedServer
    app: App
    installation: Installation
    models: RunningModelServer


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with (
        GitHubState() as state,
        running_testbed(state) as testbed,
        running_model_server(SCRIPT) as models,
    ):
        app = state.create_app("baro-idem")
        installation = state.create_installation(app, "octo-org")
        yield Hub(state, testbed, app, installation, models)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # The sandbox uid must be able to cross every parent of the worktrees (o+x), which
    # pytest's 0700 tmp_path does not allow: the runner's own layout, under /var/tmp.
    root = Path(tempfile.mkdtemp(prefix="baro-idem-", dir="/var/tmp"))
    root.chmod(0o711)
    (root / "mirrors").mkdir(mode=0o700)
    (root / "worktrees").mkdir()
    (root / "worktrees").chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Calls:
    notified: list[tuple[str, str, int]] = field(default_factory=list)
    verified: list[tuple[str, int]] = field(default_factory=list)

    landings: list[tuple[str, str, int]] = field(default_factory=list)

    async def notify(self, run_id: str, story_id: str, attempt: int) -> None:
        self.notified.append((run_id, story_id, attempt))

    async def landing(self, run_id: str, story_id: str, attempt: int) -> None:
        self.landings.append((run_id, story_id, attempt))

    async def on_verified(self, run_id: str, round_: int) -> None:
        self.verified.append((run_id, round_))


@dataclass
class Harness:
    runner: StoryRunner
    store: RunStore
    repo: Repo
    calls: Calls
    models: RunningModelServer

    def commits(self) -> list[str]:
        out = subprocess.run(
            ["git", "--git-dir", str(self.repo.git_dir), "log", "--format=%H %s", BRANCH],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.strip().splitlines()

    def model_calls(self) -> int:
        return len([r for r in self.models.requests if r.rule == "S1"])

    async def record(self) -> StoryRecord:
        return (await self.store.get(RUN_ID)).stories["S1"]

    async def set_running(self, attempt: int) -> None:
        """As the orchestrator's dispatch leaves it: running, attempt counted, queued lease."""

        def running(run: Run) -> Run:
            stories = dict(run.stories)
            stories["S1"] = stories["S1"].model_copy(
                update={"state": "running", "attempts": attempt, "sha": None, "finished_at": None}
            )
            return run.model_copy(update={"stories": stories})

        await self.store.update(RUN_ID, running)
        await self.store.redis.delete(f"baro:lease:{RUN_ID}:S1")
        assert await self.store.acquire_lease(RUN_ID, "S1", f"queued:{attempt}", 1800)


@pytest.fixture
async def harness(hub: Hub, redis_url: str, data_dir: Path) -> AsyncIterator[Harness]:
    state = hub.state
    repo = state.create_repo(
        "octo-org",
        f"idem-{uuid.uuid4().hex[:8]}",
        {"README.md": "# Idem\n"},
        installation=hub.installation,
    )
    subprocess.run(
        ["git", "--git-dir", str(repo.git_dir), "update-ref", f"refs/heads/{BRANCH}", "main"],
        check=True,
    )
    settings = Settings(
        github_app_id=hub.app.id,
        github_private_key=SecretStr(hub.app.private_key_pem),
        github_webhook_secret=SecretStr(hub.app.webhook_secret),
        github_app_slug=hub.app.slug,
        github_api_url=hub.testbed.url,
        redis_url=redis_url,
        github_write_spacing=0,
        models=[
            {
                "name": "story-model",
                "protocol": "openai-chat",
                "base_url": hub.models.url + "/v1",
                "model_id": "deepseek-v4-flash",
                "api_key_env": "BARO_TEST_STORY_KEY",
            }
        ],
        routing={
            "planner": "story-model",
            "light": "story-model",
            "standard": "story-model",
            "heavy": "story-model",
        },
        model_keys={"story-model": SecretStr(MODEL_KEY)},
        runner_data_dir=data_dir,
        story_lease_seconds=30,
    )
    redis = Redis.from_url(redis_url)
    store = RunStore(redis)
    run = Run(
        id=RUN_ID,
        delivery_id="delivery-idem",
        installation_id=hub.installation.id,
        owner="octo-org",
        repo=repo.name,
        issue_number=1,
        issue_title="Idempotent",
        requester="maintainer",
        trigger="label",
        state="running",
        default_branch="main",
        plan=Plan.model_validate(PLAN),
        branch=BRANCH,
        stories={"S1": StoryRecord(), "S2": StoryRecord()},  # S2 could take a free slot
    )
    await store.create(run)
    calls = Calls()
    async with httpx.AsyncClient(timeout=60) as http:
        runner = StoryRunner(
            settings=settings,
            store=store,
            gateway=GitHubGateway(settings, MemCacheStrategy()),
            workspaces=Workspaces(data_dir),
            sandbox=make_sandbox("bwrap", SandboxPolicy(hidden_paths=(data_dir / "mirrors",))),
            http=http,
            prices=load_prices(),
            notify=calls.notify,
            landing=calls.landing,
            slots=AgentSlots(2),
            runner_id="test-runner",
            verified=calls.on_verified,
        )
        h = Harness(runner, store, repo, calls, hub.models)
        await h.set_running(1)
        yield h
    await redis.aclose()


async def test_a_story_lands_once_however_often_its_job_runs(harness: Harness) -> None:
    h = harness
    assert len(h.commits()) == 1
    model_calls = h.model_calls()

    assert await h.runner.run_story(RUN_ID, "S1", 1) == "landed"
    # its agent slot was given up before it landed, and the runner's count is back
    assert h.calls.landings == [(RUN_ID, "S1", 1)] and h.runner.slots.landing == 0
    first = await h.record()
    commits = h.commits()
    assert len(commits) == 2 and commits[0].endswith(f"S1: {STORY_TITLE}")
    sha = commits[0].split()[0]
    assert (first.state, first.sha, first.attempts) == ("landed", sha, 1)
    assert h.calls.notified == [(RUN_ID, "S1", 1)]
    assert h.model_calls() == model_calls + 2
    model_calls += 2
    assert await h.store.lease_holder(RUN_ID, "S1") is None  # released

    # The same job delivered again: nothing to do, nothing reported.
    assert await h.runner.run_story(RUN_ID, "S1", 1) == "already landed"
    assert h.commits() == commits
    assert h.calls.notified == [(RUN_ID, "S1", 1)]
    assert h.model_calls() == model_calls

    # A crash after the push but before the outcome was recorded: the reaper re-dispatched
    # the story (attempt 2). The commit is on the branch, so it is recorded, not redone.
    await h.set_running(2)
    assert await h.runner.run_story(RUN_ID, "S1", 2) == "landed"
    second = await h.record()
    assert (second.state, second.sha, second.attempts) == ("landed", sha, 2)
    assert second.summary == "landed by an earlier delivery of this job"
    assert h.commits() == commits
    assert h.model_calls() == model_calls  # no agent ran
    assert h.calls.notified == [(RUN_ID, "S1", 1), (RUN_ID, "S1", 2)]
    assert await h.store.lease_holder(RUN_ID, "S1") is None


async def test_a_first_attempt_delivered_again_after_its_push_is_recorded_not_redone(
    harness: Harness,
) -> None:
    """The first delivery of an attempt asks the model before looking at the branch; a
    second delivery of the same attempt (its runner died after pushing) must look first."""
    h = harness
    assert await h.runner.run_story(RUN_ID, "S1", 1) == "landed"
    commits = h.commits()
    model_calls = h.model_calls()
    await h.set_running(1)  # the outcome never reached the record; arq runs the job again
    assert await h.runner.run_story(RUN_ID, "S1", 1) == "landed"
    again = await h.record()
    assert again.summary == "landed by an earlier delivery of this job"
    assert h.commits() == commits
    assert h.model_calls() == model_calls


async def test_a_stale_attempt_is_a_no_op(harness: Harness) -> None:
    h = harness
    await h.set_running(2)  # attempt 2 was dispatched; attempt 1's job arrives late
    before = await h.store.get(RUN_ID)
    model_calls = h.model_calls()
    outcome = await h.runner.run_story(RUN_ID, "S1", 1)
    assert outcome == "stale attempt 1 (story is running, attempt 2)"
    after = await h.store.get(RUN_ID)
    assert after.version == before.version and after.stories == before.stories
    assert await h.store.lease_holder(RUN_ID, "S1") == "queued:2"  # untouched
    assert h.calls.notified == []
    assert len(h.commits()) == 1
    assert h.model_calls() == model_calls

    # Another runner already holds attempt 2: a duplicate delivery of it does not start.
    assert await h.store.claim_lease(RUN_ID, "S1", "queued:2", "other-runner:2", 30)
    assert await h.runner.run_story(RUN_ID, "S1", 2) == "another runner holds this story"
    assert (await h.store.get(RUN_ID)).stories == before.stories
    assert h.calls.notified == []


def _edit(text: str) -> dict[str, Any]:
    return {
        "tool_calls": [
            {
                "name": "editor",
                "arguments": {"command": "create", "path": "idem.txt", "file_text": text},
            }
        ],
        "usage": {"input": 500, "output": 40},
    }


def _finish(summary: str) -> dict[str, Any]:
    return {
        "tool_calls": [{"name": "finish", "arguments": {"summary": summary}}],
        "usage": {"input": 600, "output": 10},
    }


async def test_a_conflict_takes_the_agent_slot_back_then_gives_it_up_again(
    harness: Harness,
) -> None:
    """While S1's agent worked, someone wrote idem.txt on the run branch: S1's landing
    conflicts, so its agent works again. It takes its agent slot back first (the limits a
    dispatch keeps), resolves, and gives the slot up again to land."""
    from app.warmup import WarmUp

    h = harness
    script = {
        "rules": [
            {
                "name": "S1",
                "match": {"first_user": f"Implement story S1: {STORY_TITLE}"},
                "turns": [
                    _edit("idem\n"),
                    _finish("Added idem."),
                    _edit("idem\nhuman\n"),
                    _finish("Kept both lines."),
                ],
            }
        ]
    }
    h.models.set_script(script)
    try:
        git = ["git", "--git-dir", str(h.repo.git_dir)]
        base = subprocess.run(
            [*git, "rev-parse", BRANCH], capture_output=True, text=True, check=True
        ).stdout.strip()
        # the runner's mirror holds the branch as it was, and the run's hint says so
        await h.runner.warm(WarmUp(run_id=RUN_ID, branch=BRANCH, sha=base))
        await h.store.branch_created(RUN_ID, base)
        blob = subprocess.run(
            [*git, "hash-object", "-w", "--stdin"],
            input="human\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        tree = subprocess.run(
            [*git, "mktree"],
            input=f"100644 blob {blob}\tidem.txt\n"
            + subprocess.run(
                [*git, "ls-tree", base], capture_output=True, text=True, check=True
            ).stdout,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env = {"GIT_AUTHOR_NAME": "Human", "GIT_AUTHOR_EMAIL": "h@example.com"}
        env |= {"GIT_COMMITTER_NAME": "Human", "GIT_COMMITTER_EMAIL": "h@example.com"}
        human = subprocess.run(
            [*git, "commit-tree", tree, "-p", base, "-m", "by hand"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        ).stdout.strip()
        subprocess.run([*git, "update-ref", f"refs/heads/{BRANCH}", human], check=True)

        assert await h.runner.run_story(RUN_ID, "S1", 1) == "landed"
    finally:
        h.models.set_script(SCRIPT)
    record = await h.record()
    assert record.state == "landed"
    # given up before landing, taken back for the conflict, given up again after it
    assert h.calls.landings == [(RUN_ID, "S1", 1), (RUN_ID, "S1", 1)]
    assert h.runner.slots.landing == 0
    show = subprocess.run(
        ["git", "--git-dir", str(h.repo.git_dir), "show", f"{BRANCH}:idem.txt"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert show.stdout == "idem\nhuman\n"
    assert [c.split(" ", 1)[1] for c in h.commits()[:2]] == [f"S1: {STORY_TITLE}", "by hand"]

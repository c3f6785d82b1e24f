"""Failure paths end to end: red stories, nothing landed, cancel, retry, a dead runner, and a
runner without a working sandbox — real web/worker/runner processes against the testbed."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis import Redis

from app.core.plan import Plan
from app.core.run import Run, StoryRecord
from testbed.models.harness import RunningModelServer
from tests.conftest import RedisServer
from tests.e2e.conftest import DEFAULT_SCRIPT
from tests.e2e.harness import (
    ROOT,
    TERMINAL,
    Bot,
    World,
    bot_env,
    current,
    new_bot,
    tracking,
    wait_for,
    wait_run,
)
from tests.e2e.test_execution import git_log, runners_bot, story

__all__ = ["runners_bot"]  # the module-scoped bot with two runners, shared by these tests


# --- scripting ------------------------------------------------------------------------------


def tag() -> str:
    return uuid.uuid4().hex[:6]


def create(path: str, text: str, latency: float = 0.0) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "tool_calls": [
            {"name": "editor", "arguments": {"command": "create", "path": path, "file_text": text}}
        ],
        "usage": {"input": 800, "output": 60},
    }
    if latency:
        turn["latency"] = latency
    return turn


def finish(latency: float = 0.0) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "tool_calls": [{"name": "finish", "arguments": {"summary": "Done."}}],
        "usage": {"input": 900, "cached": 800, "output": 20},
    }
    if latency:
        turn["latency"] = latency
    return turn


def agent(name: str, sid: str, title: str, turns: list[dict[str, Any] | str]) -> dict[str, Any]:
    """A story agent's rule, matched on the kickoff `Implement story S1: <title>.`."""
    return {
        "name": name,
        "match": {"first_user": f"Implement story {sid}: {title}"},
        "turns": turns,
    }


def planner(issue_title: str, plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"plan {issue_title}",
        "match": {"system": "baro's planner", "first_user": issue_title},
        "turns": [{"tool_calls": [{"name": "submit_plan", "arguments": plan}]}],
    }


def use(models: RunningModelServer, *rules: dict[str, Any]) -> None:
    models.set_script({"rules": [*rules, *DEFAULT_SCRIPT["rules"]]})


def always_wrong(path: str) -> list[dict[str, Any] | str]:
    """One attempt whose story test never passes: the file, then finish three times (the
    first finish and the two repairs it is allowed; the third red check fails the attempt)."""
    return [create(path, "wrong\n"), finish(), finish(), finish()]


def requests_of(models: RunningModelServer, rule: str) -> list[Any]:
    return [r for r in models.requests if r.rule == rule]


def kickoffs(requests: list[Any]) -> list[str]:
    """The first user message of each conversation (one per attempt), in order."""
    return [r.body["messages"][1]["content"] for r in requests if r.turn == 0]


KICKOFFS: dict[str, tuple[list[str], str]] = {}
"""Scenario → (each attempt's kickoff message, the failure a retry's kickoff should name)."""


# --- observing ------------------------------------------------------------------------------


def comment_says(world: World, repo: Any, number: int, text: str) -> Any:
    return wait_for(
        lambda: (c := tracking(world, repo, number)) and text in c.body and c,
        15,
        f"the tracking comment to say {text!r}",
    )


def labels_once(world: World, repo: Any, number: int, label: str) -> list[str]:
    """The issue's labels once `label` is on it (labels follow the run's final state)."""
    return wait_for(  # type: ignore[no-any-return]
        lambda: (labels := world.state.labels(repo, number)) and label in labels and labels,
        15,
        f"the {label} label",
    )


ENDED: list[tuple[Any, int, str, float]] = []
"""(repo, issue, text the final comment must keep, when the run ended) for the check below."""


def subjects(world: World, repo: Any, branch: str) -> list[str]:
    return [entry.split("\x00")[0] for entry in git_log(world, repo, branch)]


def get(client: Redis, key: str) -> bytes | None:
    return cast("bytes | None", client.get(key))


def checklist(body: str, sid: str) -> str:
    lines = [line for line in body.splitlines() if f"**{sid}**" in line and "- [" in line]
    assert len(lines) == 1, body
    return lines[0]


# --- 1. a story that stays red ---------------------------------------------------------------


async def test_red_story_is_retried_then_fails_and_blocks_its_dependents(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    title = f"Red story {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "Three files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Right file {t}", [], "s1.txt", "grep -q right s1.txt"),
            story("S2", f"Two file {t}", [], "s2.txt", "grep -q two s2.txt"),
            story("S3", f"After one {t}", ["S1"], "s3.txt", "test -f s3.txt"),
        ],
    }
    use(
        models,
        planner(title, plan),
        agent(f"S1 {t}", "S1", f"Right file {t}", always_wrong("s1.txt")),
        agent(f"S2 {t}", "S2", f"Two file {t}", [create("s2.txt", "two\n"), finish()]),
        agent(f"S3 {t}", "S3", f"After one {t}", [create("s3.txt", "3\n"), finish()]),
    )
    await world.deliver_label(runners_bot, repo, issue.number)

    state = wait_run(world, runners_bot, repo, issue.number)
    stories = state["stories"]
    assert state["state"] == "checkpoint", stories
    assert {sid: s["state"] for sid, s in stories.items()} == {
        "S1": "failed",
        "S2": "landed",
        "S3": "blocked",
    }
    s1 = stories["S1"]
    assert (s1["attempts"], s1["story_retries"], s1["infra_retries"]) == (3, 2, 0)
    assert s1["failure_kind"] == "verification"
    assert "verification failed after 2 repair rounds" in s1["failure"]
    assert "grep -q right s1.txt" in s1["failure"]
    assert s1["awaiting_decision"] is False and s1["sha"] is None
    assert stories["S3"]["attempts"] == 0 and stories["S3"]["failure"] == "blocked by S1"
    # Three conversations of four turns each: 0, 1 (finish), then the two repairs.
    seen = requests_of(models, f"S1 {t}")
    assert sorted(r.turn for r in seen) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    KICKOFFS["red"] = (kickoffs(seen), "verification failed after 2 repair rounds")
    assert requests_of(models, f"S3 {t}") == []

    branch = state["branch"]
    assert subjects(world, repo, branch)[:-1] == [f"S2: Two file {t}"]
    assert world.state.read_file(repo, branch, "s1.txt") is None

    pulls = world.state.pulls(repo)
    assert len(pulls) == 1
    pull = pulls[0]
    assert (pull.head_ref, pull.draft) == (branch, True)
    body = pull.issue.body
    assert body.startswith(f"Refs #{issue.number}\n")
    assert "> [!WARNING]" in body
    assert "> - ❌ **S1** failed (verification): verification failed" in body
    assert "> - ⛔ **S3** blocked by S1" in body
    assert state["pr_number"] == pull.number

    labels = labels_once(world, repo, issue.number, "baro:failed")
    assert "baro:running" not in labels and "baro:done" not in labels
    comment = comment_says(world, repo, issue.number, f"/pull/{pull.number}")
    assert "### ⚠️ Checkpoint — 1/3 stories landed" in comment.body
    assert "(a checkpoint: review what landed)" in comment.body
    assert "❌ failed" in checklist(comment.body, "S1")
    assert "attempt 3" in checklist(comment.body, "S1")
    assert "⛔ blocked" in checklist(comment.body, "S3")
    assert checklist(comment.body, "S2").startswith("- [x] **S2**")
    ENDED.append((repo, issue.number, f"/pull/{pull.number}", time.monotonic()))


# --- 1b. a failure the orchestrator has not decided on yet ----------------------------------


async def test_an_undecided_failure_keeps_the_run_open(world: World, runners_bot: Bot) -> None:
    t = tag()
    repo = world.new_repo()
    issue = world.new_issue(repo, f"Undecided {t}")
    branch = f"baro/issue-{issue.number}-undecided-{t}"
    subprocess.run(
        ["git", "--git-dir", str(repo.git_dir), "update-ref", f"refs/heads/{branch}", "main"],
        check=True,
    )
    plan = Plan.model_validate(
        {
            "summary": "Two files.",
            "design_note": "Root files.",
            "stories": [
                story("S1", "First", [], "a.txt", "test -f a.txt"),
                story("S2", "Second", ["S1"], "b.txt", "test -f b.txt"),
            ],
        }
    )
    # As the runner leaves it right after recording a red attempt, before the orchestrator's
    # story_finished job has decided to retry it (S1 has its whole retry budget left).
    failed = StoryRecord(
        state="failed",
        attempts=1,
        awaiting_decision=True,
        failure_kind="verification",
        failure="verification failed after 2 repair rounds: `test -f a.txt`",
    )
    run = Run(
        id=f"r{t}undec",
        delivery_id=str(uuid.uuid4()),
        installation_id=world.installation.id,
        owner=world.owner,
        repo=repo.name,
        issue_number=issue.number,
        issue_title=f"Undecided {t}",
        requester=world.maintainer,
        trigger="label",
        state="running",
        default_branch="main",
        plan=plan,
        branch=branch,
        stories={"S1": failed, "S2": StoryRecord()},
    )
    client = Redis.from_url(runners_bot.env["BARO_REDIS_URL"])
    key = f"baro:run:{run.id}"
    try:
        client.set(key, run.model_dump_json())
        client.sadd("baro:runs:active", run.id)

        def state() -> str:
            raw = get(client, key)
            assert raw is not None
            return str(json.loads(raw)["state"])

        deadline = time.monotonic() + 7  # the reaper dispatches every active run every 5 s
        while time.monotonic() < deadline and state() == "running":
            time.sleep(0.1)
        assert state() == "running"
    finally:
        client.srem("baro:runs:active", run.id)
        ended = json.loads(get(client, key) or run.model_dump_json())
        client.set(key, json.dumps({**ended, "state": "cancelled"}))
        client.close()


# --- 2. nothing landed ------------------------------------------------------------------------


async def test_nothing_landed_means_no_pull_request(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    title = f"Never finishes {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Chatty {t}", [], "c.txt", "test -f c.txt")],
    }
    use(
        models,
        planner(title, plan),
        agent(f"S1 {t}", "S1", f"Chatty {t}", ["I will think about it.", "Still thinking."]),
    )
    await world.deliver_label(runners_bot, repo, issue.number)

    state = wait_run(world, runners_bot, repo, issue.number)
    assert state["state"] == "failed", state["stories"]
    s1 = state["stories"]["S1"]
    assert s1["state"] == "failed"
    assert (s1["attempts"], s1["story_retries"]) == (3, 2)
    assert s1["failure_kind"] == "execution"
    assert s1["failure"] == "the model stopped calling tools without calling finish"
    assert sorted(r.turn for r in requests_of(models, f"S1 {t}")) == [0, 0, 0, 1, 1, 1]
    assert state["pr_number"] is None and state["pr_url"] is None
    assert world.state.pulls(repo) == []
    assert len(git_log(world, repo, state["branch"])) == 1  # the branch is only the base

    labels = labels_once(world, repo, issue.number, "baro:failed")
    assert "baro:running" not in labels
    comment = comment_says(world, repo, issue.number, "**No pull request:**")
    assert "### ❌ Failed — 0/1 stories landed" in comment.body
    assert "no story landed, so there is nothing to review" in comment.body
    assert "`/baro retry`" in comment.body
    assert "❌ failed" in checklist(comment.body, "S1")
    ENDED.append((repo, issue.number, "**No pull request:** no story landed", time.monotonic()))


# --- 3. /baro cancel -----------------------------------------------------------------------


async def test_cancel_stops_the_running_story_and_keeps_the_branch(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    title = f"Cancel me {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "Two files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Slow file {t}", [], "slow.txt", "test -f slow.txt"),
            story("S2", f"Later file {t}", ["S1"], "later.txt", "test -f later.txt"),
        ],
    }
    slow = f"S1 {t}"
    use(
        models,
        planner(title, plan),
        agent(slow, "S1", f"Slow file {t}", [create("slow.txt", "s\n", 3), finish(3)]),
        agent(f"S2 {t}", "S2", f"Later file {t}", [create("later.txt", "l\n"), finish()]),
    )
    await world.deliver_label(runners_bot, repo, issue.number)
    wait_for(lambda: requests_of(models, slow), 60, "S1's first model turn")
    running = current(world, runners_bot, repo, issue.number)
    assert running is not None and running["stories"]["S1"]["state"] == "running"

    resp = await world.deliver_comment(runners_bot, repo, issue.number, "/baro cancel")
    assert resp.status_code == 202, resp.text
    state = wait_run(
        world,
        runners_bot,
        repo,
        issue.number,
        lambda s: (
            s["state"] == "cancelled"
            and s["stories"]["S1"]["state"] not in ("running",)
            and not s["stories"]["S1"]["awaiting_decision"]
        ),
        30,
        "the cancelled run's running story to stop",
    )
    s1, s2 = state["stories"]["S1"], state["stories"]["S2"]
    assert (s1["state"], s1["failure_kind"], s1["attempts"]) == ("failed", "cancelled", 1)
    assert s1["failure"] == "the story was cancelled" and s1["sha"] is None
    assert (s2["state"], s2["attempts"]) == ("cancelled", 0)
    # The agent saw the cancellation before its second turn: one model call, no commit.
    assert [r.turn for r in requests_of(models, slow)] == [0]
    assert requests_of(models, f"S2 {t}") == []
    branch = state["branch"]
    assert world.state.branch_sha(repo, branch) is not None  # the branch is kept
    assert len(git_log(world, repo, branch)) == 1
    assert world.state.pulls(repo) == []
    replies = [c.body for c in world.bot_comments(repo, issue.number) if "is cancelled" in c.body]
    assert len(replies) == 1 and f"Run `{state['id']}` is cancelled" in replies[0]
    comment = comment_says(world, repo, issue.number, "Cancelled — 0/2 stories landed")
    assert "🚫 cancelled" in checklist(comment.body, "S2")
    time.sleep(1)  # nothing lands late
    assert len(git_log(world, repo, branch)) == 1


async def test_cancel_removes_the_running_label(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    title = f"Cancel label {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Slow label {t}", [], "slow.txt", "test -f slow.txt")],
    }
    slow = f"S1 {t}"
    use(
        models,
        planner(title, plan),
        agent(slow, "S1", f"Slow label {t}", [create("slow.txt", "s\n", 2), finish()]),
    )
    await world.deliver_label(runners_bot, repo, issue.number)
    wait_for(lambda: requests_of(models, slow), 60, "S1's first model turn")
    await world.deliver_comment(runners_bot, repo, issue.number, "/baro cancel")
    wait_run(
        world,
        runners_bot,
        repo,
        issue.number,
        lambda s: s["state"] == "cancelled" and s["stories"]["S1"]["state"] == "failed",
        30,
    )
    time.sleep(1)
    assert "baro:running" not in world.state.labels(repo, issue.number)


# --- 4. /baro retry --------------------------------------------------------------------------

RETRIED: dict[str, Any] = {}
"""What the retry test saw, for the follow-up checks on the same run."""


async def test_retry_after_a_failure_lands_the_rest_on_the_same_pull_request(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    title = f"Retry me {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "Three files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Flaky file {t}", [], "r1.txt", "grep -q right r1.txt"),
            story("S2", f"Needs flaky {t}", ["S1"], "r2.txt", "test -f r2.txt"),
            story("S3", f"Alone file {t}", [], "r3.txt", "test -f r3.txt"),
        ],
    }
    rules = [
        planner(title, plan),
        agent(f"S2 {t}", "S2", f"Needs flaky {t}", [create("r2.txt", "2\n"), finish()]),
        agent(f"S3 {t}", "S3", f"Alone file {t}", [create("r3.txt", "3\n"), finish()]),
    ]
    use(models, agent(f"S1 {t}", "S1", f"Flaky file {t}", always_wrong("r1.txt")), *rules)
    await world.deliver_label(runners_bot, repo, issue.number)
    first = wait_run(world, runners_bot, repo, issue.number)
    assert first["state"] == "checkpoint", first["stories"]
    assert {sid: s["state"] for sid, s in first["stories"].items()} == {
        "S1": "failed",
        "S2": "blocked",
        "S3": "landed",
    }
    pulls = world.state.pulls(repo)
    assert len(pulls) == 1 and pulls[0].draft is True
    number = pulls[0].number
    labels_once(world, repo, issue.number, "baro:failed")

    fixed = f"S1 fixed {t}"
    use(
        models,
        agent(fixed, "S1", f"Flaky file {t}", [create("r1.txt", "right\n"), finish()]),
        *rules,
    )
    resp = await world.deliver_comment(runners_bot, repo, issue.number, "/baro retry")
    assert resp.status_code == 202, resp.text
    state = wait_run(
        world,
        runners_bot,
        repo,
        issue.number,
        lambda s: s["version"] > first["version"] and s["state"] in TERMINAL,
        90,
        "the retried run to end",
    )
    assert state["id"] == first["id"] and state["branch"] == first["branch"]
    assert state["state"] == "done", state["stories"]
    stories = state["stories"]
    assert {sid: s["state"] for sid, s in stories.items()} == {
        "S1": "landed",
        "S2": "landed",
        "S3": "landed",
    }
    assert (stories["S1"]["attempts"], stories["S1"]["story_retries"]) == (4, 0)
    assert stories["S2"]["attempts"] == 1 and stories["S3"]["attempts"] == 1
    assert len(requests_of(models, fixed)) == 2
    log = subjects(world, repo, state["branch"])
    assert log[:-1] == [f"S2: Needs flaky {t}", f"S1: Flaky file {t}", f"S3: Alone file {t}"]
    assert world.state.read_file(repo, state["branch"], "r1.txt") == b"right\n"

    pulls = world.state.pulls(repo)
    assert [p.number for p in pulls] == [number]  # the same pull request, updated
    assert state["pr_number"] == number
    body = pulls[0].issue.body
    assert body.startswith(f"Closes #{issue.number}\n")
    assert "[!WARNING]" not in body
    comment = comment_says(world, repo, issue.number, "### ✅ Done — 3/3 stories landed")
    assert f"**Pull request:** {state['pr_url']}" in comment.body
    assert state["pr_url"].endswith(f"/pull/{number}")
    labels = labels_once(world, repo, issue.number, "baro:done")
    assert "baro:running" not in labels
    RETRIED.update(repo=repo, issue=issue.number, pull=pulls[0], labels=labels)
    ENDED.append((repo, issue.number, f"/pull/{number}", time.monotonic()))


async def test_a_pull_request_github_keeps_refusing_is_reported_then_retried(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    """A refusal that will not go away ends the run with GitHub's words and the branch after
    a few tries (not at the stall limit hours later); `/baro retry` opens the PR."""
    t = tag()
    title = f"Refused PR {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Refused file {t}", [], "p.txt", "test -f p.txt")],
    }
    use(
        models,
        planner(title, plan),
        agent(f"S1 {t}", "S1", f"Refused file {t}", [create("p.txt", "p\n"), finish()]),
    )
    pulls_path = rf"^/repos/{world.owner}/{repo.name}/pulls$"
    refusal = world.state.faults.add(
        method="POST",
        path=pulls_path,
        status=422,
        body={
            "message": "Validation Failed",
            "errors": [{"resource": "PullRequest", "code": "custom", "message": f"base {t} gone"}],
        },
        times=None,
    )
    try:
        await world.deliver_label(runners_bot, repo, issue.number)
        first = wait_run(world, runners_bot, repo, issue.number, timeout=120)
    finally:
        world.state.faults.remove(refusal)
    assert first["state"] == "failed" and first["pr_number"] is None, first
    assert first["stories"]["S1"]["state"] == "landed"
    assert refusal.hits == 3
    assert first["failure"] == (
        "GitHub refused to open the pull request after 3 tries: "
        f"GitHub answered 422 Validation Failed: base {t} gone"
    )
    comment = comment_says(world, repo, issue.number, "**No pull request yet:**")
    assert "### ❌ Failed — 1/1 stories landed" in comment.body
    assert f"<code>{first['branch']}</code>" in comment.body
    assert f"base {t} gone" in comment.body and "`/baro retry`" in comment.body
    labels_once(world, repo, issue.number, "baro:failed")
    assert world.state.pulls(repo) == []

    resp = await world.deliver_comment(runners_bot, repo, issue.number, "/baro retry")
    assert resp.status_code == 202, resp.text
    state = wait_run(
        world,
        runners_bot,
        repo,
        issue.number,
        lambda s: s["version"] > first["version"] and s["state"] in TERMINAL,
        60,
        "the retried run to open its pull request",
    )
    assert state["state"] == "done" and state["failure"] is None, state
    assert state["stories"]["S1"]["attempts"] == 1  # nothing ran again
    pulls = world.state.pulls(repo)
    assert [p.number for p in pulls] == [state["pr_number"]]
    assert subjects(world, repo, state["branch"])[0] == f"S1: Refused file {t}"
    comment_says(world, repo, issue.number, "### ✅ Done — 1/1 stories landed")
    labels_once(world, repo, issue.number, "baro:done")


def test_retry_to_done_marks_the_pull_request_ready() -> None:
    if not RETRIED:
        pytest.skip("needs the retry test above")
    assert RETRIED["pull"].draft is False


def test_retry_to_done_drops_the_failed_label() -> None:
    if not RETRIED:
        pytest.skip("needs the retry test above")
    assert "baro:failed" not in RETRIED["labels"]


# --- 5. the reaper: a runner killed mid-story -------------------------------------------------


@pytest.fixture
def lone_runner_bot(world: World, models: RunningModelServer) -> Iterator[tuple[Bot, RedisServer]]:
    """Own Redis, web + worker + ONE runner, with short story leases."""
    redis = RedisServer()
    redis.start()
    env = bot_env(world.testbed, world.app, redis.url, models.url, BARO_STORY_LEASE_SECONDS="3")
    running = new_bot(env)
    running.start_all(runners=1)
    try:
        yield running, redis
    finally:
        running.stop()
        redis.stop()


async def test_reaper_redispatches_the_story_of_a_killed_runner(
    world: World, lone_runner_bot: tuple[Bot, RedisServer], models: RunningModelServer
) -> None:
    bot, redis = lone_runner_bot
    t = tag()
    title = f"Runner dies {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Survivor {t}", [], "r.txt", "grep -q reaped r.txt")],
    }
    rule = f"S1 {t}"
    use(
        models,
        planner(title, plan),
        agent(rule, "S1", f"Survivor {t}", [create("r.txt", "reaped\n", 8), finish()]),
    )
    await world.deliver_label(bot, repo, issue.number)
    client = Redis.from_url(redis.url)
    try:

        def claimed() -> str | None:
            state = current(world, bot, repo, issue.number)
            if state is None or state["stories"].get("S1", {}).get("state") != "running":
                return None
            holder = get(client, f"baro:lease:{state['id']}:S1")
            text = holder.decode() if holder else ""
            return text if text and not text.startswith("queued:") else None

        holder = wait_for(claimed, 60, "the runner to claim S1's lease")
        assert holder.endswith(":1")
        wait_for(lambda: requests_of(models, rule), 20, "S1's first model turn")
        bot.procs["runner"].kill()
        bot.procs["runner"].wait(10)
        bot.start("runner-2")

        state = wait_run(world, bot, repo, issue.number, timeout=90)
    finally:
        client.close()
    assert state["state"] == "done", state["stories"]
    s1 = state["stories"]["S1"]
    assert s1["state"] == "landed"
    assert (s1["attempts"], s1["infra_retries"], s1["story_retries"]) == (2, 1, 0)
    assert s1["failure"] is None
    log = subjects(world, repo, state["branch"])
    assert len(log) == 2 and log[0] == f"S1: Survivor {t}"  # one commit on the base
    assert world.state.read_file(repo, state["branch"], "r.txt") == b"reaped\n"
    # Attempt 1 only started its first turn; attempt 2 ran both.
    seen = requests_of(models, rule)
    assert sorted(r.turn for r in seen) == [0, 0, 1]
    KICKOFFS["reaped"] = (kickoffs(seen), "the runner stopped responding (lease expired)")
    assert "reaped stories with expired leases" in bot.logs("worker")
    assert len(world.state.pulls(repo)) == 1


# --- 6. no sandbox, no runner ---------------------------------------------------------------


def test_runner_refuses_to_start_without_a_working_sandbox(
    world: World, e2e_redis: RedisServer, models: RunningModelServer
) -> None:
    broken = Path(tempfile.mkdtemp(prefix="baro-broken-bwrap-")) / "bwrap"
    broken.write_text(
        "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    env = bot_env(world.testbed, world.app, e2e_redis.url, models.url, BARO_BWRAP_PATH=str(broken))
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "runner"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("baro-bot:")]
    assert ours == [
        "baro-bot: the sandbox does not work here, refusing to run stories: "
        f"{broken} --version failed: bwrap: setting up uid map: Permission denied; "
        "for trusted local development only, set BARO_SANDBOX=none"
    ], result.stderr
    assert "Traceback" not in result.stderr


def edit(path: str, old: str, new: str, latency: float = 0.0) -> dict[str, Any]:
    arguments = {"command": "str_replace", "path": path, "old_str": old, "new_str": new}
    turn: dict[str, Any] = {
        "tool_calls": [{"name": "editor", "arguments": arguments}],
        "usage": {"input": 800, "output": 60},
    }
    if latency:
        turn["latency"] = latency
    return turn


async def test_checks_run_again_after_a_clean_rebase_over_the_storys_files(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    """S2's check passes on the base it started from, but not with S1's change to the same
    file, which git merges without a conflict: S2 must not land on its stale green."""
    t = tag()
    title = f"Same file {t}"
    repo = world.new_repo({"a.py": "".join(f"v{i} = {i}\n" for i in range(8))})
    issue = world.new_issue(repo, title)
    s2_check = "! grep -q 'v0 = 10' a.py && grep -q 'v7 = 70' a.py"
    plan = {
        "summary": "Two edits.",
        "design_note": "a.py only.",
        "stories": [
            story("S1", f"Top line {t}", [], "a.py", "grep -q 'v0 = 10' a.py"),
            story("S2", f"Bottom line {t}", [], "a.py", s2_check),
        ],
    }
    bottom = edit("a.py", "v7 = 7", "v7 = 70", latency=5)  # after S1 has landed
    use(
        models,
        planner(title, plan),
        agent(f"S1 {t}", "S1", f"Top line {t}", [edit("a.py", "v0 = 0", "v0 = 10"), finish()]),
        agent(f"S2 {t}", "S2", f"Bottom line {t}", [bottom, finish(), finish(), finish()]),
    )
    await world.deliver_label(runners_bot, repo, issue.number)

    state = wait_run(world, runners_bot, repo, issue.number, timeout=120)
    stories = state["stories"]
    assert {sid: s["state"] for sid, s in stories.items()} == {"S1": "landed", "S2": "failed"}
    assert stories["S2"]["failure_kind"] == "verification"
    branch = state["branch"]
    assert subjects(world, repo, branch)[:-1] == [f"S1: Top line {t}"]
    assert world.state.read_file(repo, branch, "a.py").splitlines()[-1] == b"v7 = 7"
    # The first attempt failed on the re-check after its rebase; the retry was told so.
    retry = kickoffs(requests_of(models, f"S2 {t}"))[1]
    assert "A previous attempt at this story failed" in retry
    assert "after rebasing onto stories that also changed a.py" in retry


def test_a_retry_is_told_why_the_previous_attempt_failed() -> None:
    if not KICKOFFS:
        pytest.skip("needs the runs above")
    for scenario, (messages, failure) in KICKOFFS.items():
        assert len(messages) >= 2, scenario
        for retry in messages[1:]:
            assert "A previous attempt at this story failed" in retry, (scenario, retry)
            assert failure in retry, (scenario, retry)


def test_final_comment_survives_the_end_of_the_run(world: World) -> None:
    """A debounced refresh that fires after the run ended must not bring the checklist back."""
    if not ENDED:
        pytest.skip("needs the runs above")
    time.sleep(max(0.0, ENDED[-1][3] + 4.5 - time.monotonic()))  # past the debounce window
    lost = [
        (text, tracking(world, repo, number).body.split("\n", 2)[1])
        for repo, number, text, _ in ENDED
        if text not in tracking(world, repo, number).body
    ]
    assert lost == [], lost

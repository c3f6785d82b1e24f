"""Failure paths end to end: red stories, nothing landed, cancel, retry, a dead runner, and a
runner without a working sandbox — real web/worker/runner processes against the testbed.

Each test stands alone (its own repository, issue and script), so any one of them can run by
itself or on another shard.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from redis import Redis

from app.core.plan import Plan
from app.core.run import Run, StoryRecord
from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.conftest import RedisServer
from tests.e2e.harness import ROOT, TERMINAL, Bot, World, bot_env, new_bot, tracking
from tests.e2e.scenario import (
    Scenario,
    agent,
    always_wrong,
    create,
    edit,
    finish,
    git_log,
    kickoffs,
    planner,
    story,
    tag,
    use,
)
from tests.e2e.test_execution import runners_bot

__all__ = [  # the module-scoped bot with two runners, and the script helpers other modules use
    "agent",
    "always_wrong",
    "create",
    "edit",
    "finish",
    "planner",
    "runners_bot",
    "tag",
    "use",
]

DEBOUNCE_WINDOW = 4.5
"""Seconds after a run's end by which a debounced refresh (3 s by default) has fired."""


# --- observing ------------------------------------------------------------------------------


def get(client: Redis, key: str) -> bytes | None:
    return cast("bytes | None", client.get(key))


def checklist(body: str, sid: str) -> str:
    lines = [line for line in body.splitlines() if f"**{sid}**" in line and "- [" in line]
    assert len(lines) == 1, body
    return lines[0]


def assert_retries_told(messages: list[str], failure: str) -> None:
    """Every retry's kickoff says the previous attempt failed, and why."""
    assert len(messages) >= 2, messages
    for retry in messages[1:]:
        assert "A previous attempt at this story failed" in retry, retry
        assert failure in retry, retry


async def assert_final_comment_stays(s: Scenario, text: str, ended: float) -> None:
    """A debounced refresh that fires after the run ended must not bring the checklist back."""
    await asyncio.sleep(max(0.0, ended + DEBOUNCE_WINDOW - time.monotonic()))
    body = tracking(s.world, s.repo, s.number).body
    assert text in body, body.split("\n", 2)[1]


# --- 1. a story that stays red ---------------------------------------------------------------


async def test_red_story_is_retried_then_fails_and_blocks_its_dependents(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    plan = {
        "summary": "Three files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Right file {t}", [], "s1.txt", "grep -q right s1.txt"),
            story("S2", f"Two file {t}", [], "s2.txt", "grep -q two s2.txt"),
            story("S3", f"After one {t}", ["S1"], "s3.txt", "test -f s3.txt"),
        ],
    }
    s = Scenario.new(world, models, f"Red story {t}").plans(plan)
    s.agent("S1", f"Right file {t}", always_wrong("s1.txt"))
    s.agent("S2", f"Two file {t}", [create("s2.txt", "two\n"), finish()])
    s.agent("S3", f"After one {t}", [create("s3.txt", "3\n"), finish()]).script()
    await s.label(runners_bot)

    state = await s.ended(runners_bot)
    stories = state["stories"]
    assert state["state"] == "checkpoint", stories
    assert {sid: r["state"] for sid, r in stories.items()} == {
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
    seen = s.requests("S1")
    assert sorted(r.turn for r in seen) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert_retries_told(kickoffs(seen), "verification failed after 2 repair rounds")
    assert s.requests("S3") == []

    branch = state["branch"]
    assert s.subjects(branch)[:-1] == [f"S2: Two file {t}"]
    assert world.state.read_file(s.repo, branch, "s1.txt") is None

    pulls = world.state.pulls(s.repo)
    assert len(pulls) == 1
    pull = pulls[0]
    assert (pull.head_ref, pull.draft) == (branch, True)
    body = pull.issue.body
    assert body.startswith(f"Refs #{s.number}\n")
    assert "> [!WARNING]" in body
    assert "> - ❌ **S1** failed (verification): verification failed" in body
    assert "> - ⛔ **S3** blocked by S1" in body
    assert state["pr_number"] == pull.number

    labels = await s.labels_once("baro:failed")
    assert "baro:running" not in labels and "baro:done" not in labels
    comment = await s.comment_says(f"/pull/{pull.number}")
    assert "### ⚠️ Checkpoint — 1/3 stories landed" in comment.body
    assert "(a checkpoint: review what landed)" in comment.body
    assert "❌ failed" in checklist(comment.body, "S1")
    assert "attempt 3" in checklist(comment.body, "S1")
    assert "⛔ blocked" in checklist(comment.body, "S3")
    assert checklist(comment.body, "S2").startswith("- [x] **S2**")
    await assert_final_comment_stays(s, f"/pull/{pull.number}", time.monotonic())


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
            await asyncio.sleep(0.1)
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
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Chatty {t}", [], "c.txt", "test -f c.txt")],
    }
    s = Scenario.new(world, models, f"Never finishes {t}").plans(plan)
    s.agent("S1", f"Chatty {t}", ["I will think about it.", "Still thinking."]).script()
    await s.label(runners_bot)

    state = await s.ended(runners_bot)
    assert state["state"] == "failed", state["stories"]
    s1 = state["stories"]["S1"]
    assert s1["state"] == "failed"
    assert (s1["attempts"], s1["story_retries"]) == (3, 2)
    assert s1["failure_kind"] == "execution"
    assert s1["failure"] == "the model stopped calling tools without calling finish"
    assert sorted(r.turn for r in s.requests("S1")) == [0, 0, 0, 1, 1, 1]
    assert state["pr_number"] is None and state["pr_url"] is None
    assert world.state.pulls(s.repo) == []
    assert len(git_log(s.repo, state["branch"])) == 1  # the branch is only the base

    labels = await s.labels_once("baro:failed")
    assert "baro:running" not in labels
    comment = await s.comment_says("**No pull request:**")
    assert "### ❌ Failed — 0/1 stories landed" in comment.body
    assert "no story landed, so there is nothing to review" in comment.body
    assert "`/baro retry`" in comment.body
    assert "❌ failed" in checklist(comment.body, "S1")
    ended = time.monotonic()
    await assert_final_comment_stays(s, "**No pull request:** no story landed", ended)


# --- 3. /baro cancel -----------------------------------------------------------------------


async def test_cancel_stops_the_running_story_and_keeps_the_branch(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    plan = {
        "summary": "Two files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Slow file {t}", [], "slow.txt", "test -f slow.txt"),
            story("S2", f"Later file {t}", ["S1"], "later.txt", "test -f later.txt"),
        ],
    }
    s = Scenario.new(world, models, f"Cancel me {t}").plans(plan)
    s.agent("S1", f"Slow file {t}", [create("slow.txt", "s\n", 3), finish(3)])
    s.agent("S2", f"Later file {t}", [create("later.txt", "l\n"), finish()]).script()
    await s.label(runners_bot)
    await s.sent("S1")
    running = s.run(runners_bot)
    assert running is not None and running["stories"]["S1"]["state"] == "running"

    resp = await s.comment(runners_bot, "/baro cancel")
    assert resp.status_code == 202, resp.text
    state = await s.ended(
        runners_bot,
        lambda r: (
            r["state"] == "cancelled"
            and r["stories"]["S1"]["state"] not in ("running",)
            and not r["stories"]["S1"]["awaiting_decision"]
        ),
        30,
        "the cancelled run's running story to stop",
    )
    s1, s2 = state["stories"]["S1"], state["stories"]["S2"]
    assert (s1["state"], s1["failure_kind"], s1["attempts"]) == ("failed", "cancelled", 1)
    assert s1["failure"] == "the story was cancelled" and s1["sha"] is None
    assert (s2["state"], s2["attempts"]) == ("cancelled", 0)
    # The agent saw the cancellation before its second turn: one model call, no commit.
    assert [r.turn for r in s.requests("S1")] == [0]
    assert s.requests("S2") == []
    branch = state["branch"]
    assert world.state.branch_sha(s.repo, branch) is not None  # the branch is kept
    assert len(git_log(s.repo, branch)) == 1
    assert world.state.pulls(s.repo) == []
    replies = [c.body for c in world.bot_comments(s.repo, s.number) if "is cancelled" in c.body]
    assert len(replies) == 1 and f"Run `{state['id']}` is cancelled" in replies[0]
    comment = await s.comment_says("Cancelled — 0/2 stories landed")
    assert "🚫 cancelled" in checklist(comment.body, "S2")
    await asyncio.sleep(1)  # nothing lands late
    assert len(git_log(s.repo, branch)) == 1


async def test_cancel_removes_the_running_label(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Slow label {t}", [], "slow.txt", "test -f slow.txt")],
    }
    s = Scenario.new(world, models, f"Cancel label {t}").plans(plan)
    s.agent("S1", f"Slow label {t}", [create("slow.txt", "s\n", 2), finish()]).script()
    await s.label(runners_bot)
    await s.sent("S1")
    await s.comment(runners_bot, "/baro cancel")
    await s.ended(
        runners_bot,
        lambda r: r["state"] == "cancelled" and r["stories"]["S1"]["state"] == "failed",
        30,
    )
    await asyncio.sleep(1)
    assert "baro:running" not in world.state.labels(s.repo, s.number)


# --- 4. /baro retry --------------------------------------------------------------------------


async def test_retry_after_a_failure_lands_the_rest_on_the_same_pull_request(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    """…and the retry that ends done marks the draft ready and drops the failed label."""
    t = tag()
    plan = {
        "summary": "Three files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Flaky file {t}", [], "r1.txt", "grep -q right r1.txt"),
            story("S2", f"Needs flaky {t}", ["S1"], "r2.txt", "test -f r2.txt"),
            story("S3", f"Alone file {t}", [], "r3.txt", "test -f r3.txt"),
        ],
    }
    s = Scenario.new(world, models, f"Retry me {t}").plans(plan)
    s.agent("S2", f"Needs flaky {t}", [create("r2.txt", "2\n"), finish()])
    s.agent("S3", f"Alone file {t}", [create("r3.txt", "3\n"), finish()])
    s.script(s.agent_rule("S1", f"Flaky file {t}", always_wrong("r1.txt")))
    await s.label(runners_bot)
    first = await s.ended(runners_bot)
    assert first["state"] == "checkpoint", first["stories"]
    assert {sid: r["state"] for sid, r in first["stories"].items()} == {
        "S1": "failed",
        "S2": "blocked",
        "S3": "landed",
    }
    pulls = world.state.pulls(s.repo)
    assert len(pulls) == 1 and pulls[0].draft is True
    number = pulls[0].number
    await s.labels_once("baro:failed")

    fixed = [create("r1.txt", "right\n"), finish()]
    s.script(s.agent_rule("S1", f"Flaky file {t}", fixed, key="S1 fixed"))
    resp = await s.comment(runners_bot, "/baro retry")
    assert resp.status_code == 202, resp.text
    state = await s.ended(
        runners_bot,
        lambda r: r["version"] > first["version"] and r["state"] in TERMINAL,
        90,
        "the retried run to end",
    )
    assert state["id"] == first["id"] and state["branch"] == first["branch"]
    assert state["state"] == "done", state["stories"]
    stories = state["stories"]
    assert {sid: r["state"] for sid, r in stories.items()} == {
        "S1": "landed",
        "S2": "landed",
        "S3": "landed",
    }
    assert (stories["S1"]["attempts"], stories["S1"]["story_retries"]) == (4, 0)
    assert stories["S2"]["attempts"] == 1 and stories["S3"]["attempts"] == 1
    assert len(s.requests("S1 fixed")) == 2
    log = s.subjects(state["branch"])
    assert log[:-1] == [f"S2: Needs flaky {t}", f"S1: Flaky file {t}", f"S3: Alone file {t}"]
    assert world.state.read_file(s.repo, state["branch"], "r1.txt") == b"right\n"

    pulls = world.state.pulls(s.repo)
    assert [p.number for p in pulls] == [number]  # the same pull request, updated
    assert state["pr_number"] == number
    body = pulls[0].issue.body
    assert body.startswith(f"Closes #{s.number}\n")
    assert "[!WARNING]" not in body
    comment = await s.comment_says("### ✅ Done — 3/3 stories landed")
    assert f"**Pull request:** {state['pr_url']}" in comment.body
    assert state["pr_url"].endswith(f"/pull/{number}")
    labels = await s.labels_once("baro:done")
    assert "baro:running" not in labels
    # A retry to done marks the pull request ready and drops the failed label.
    await wait_for(
        lambda: world.state.pulls(s.repo)[0].draft is False, 15, "the pull request to be ready"
    )
    assert "baro:failed" not in labels
    await assert_final_comment_stays(s, f"/pull/{number}", time.monotonic())


async def test_a_pull_request_github_keeps_refusing_is_reported_then_retried(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    """A refusal that will not go away ends the run with GitHub's words and the branch after
    a few tries (not at the stall limit hours later); `/baro retry` opens the PR."""
    t = tag()
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Refused file {t}", [], "p.txt", "test -f p.txt")],
    }
    s = Scenario.new(world, models, f"Refused PR {t}").plans(plan)
    s.agent("S1", f"Refused file {t}", [create("p.txt", "p\n"), finish()]).script()
    pulls_path = rf"^/repos/{world.owner}/{s.repo.name}/pulls$"
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
        await s.label(runners_bot)
        first = await s.ended(runners_bot, timeout=120)
    finally:
        world.state.faults.remove(refusal)
    assert first["state"] == "failed" and first["pr_number"] is None, first
    assert first["stories"]["S1"]["state"] == "landed"
    assert refusal.hits == 3
    assert first["failure"] == (
        "GitHub refused to open the pull request after 3 tries: "
        f"GitHub answered 422 Validation Failed: base {t} gone"
    )
    comment = await s.comment_says("**No pull request yet:**")
    assert "### ❌ Failed — 1/1 stories landed" in comment.body
    assert f"<code>{first['branch']}</code>" in comment.body
    assert f"base {t} gone" in comment.body and "`/baro retry`" in comment.body
    await s.labels_once("baro:failed")
    assert world.state.pulls(s.repo) == []

    resp = await s.comment(runners_bot, "/baro retry")
    assert resp.status_code == 202, resp.text
    state = await s.ended(
        runners_bot,
        lambda r: r["version"] > first["version"] and r["state"] in TERMINAL,
        60,
        "the retried run to open its pull request",
    )
    assert state["state"] == "done" and state["failure"] is None, state
    assert state["stories"]["S1"]["attempts"] == 1  # nothing ran again
    pulls = world.state.pulls(s.repo)
    assert [p.number for p in pulls] == [state["pr_number"]]
    assert s.subjects(state["branch"])[0] == f"S1: Refused file {t}"
    await s.comment_says("### ✅ Done — 1/1 stories landed")
    await s.labels_once("baro:done")


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


def worker_says(bot: Bot, prefix: str) -> list[str]:
    """The messages of the worker's JSON log lines that start with `prefix`."""
    lines = (json.loads(line) for line in bot.logs("worker").splitlines() if line[:1] == "{")
    return [line["msg"] for line in lines if line["msg"].startswith(prefix)]


async def test_reaper_redispatches_the_story_of_a_killed_runner(
    world: World, lone_runner_bot: tuple[Bot, RedisServer], models: RunningModelServer
) -> None:
    bot, redis = lone_runner_bot
    t = tag()
    plan = {
        "summary": "One file.",
        "design_note": "Root file.",
        "stories": [story("S1", f"Survivor {t}", [], "r.txt", "grep -q reaped r.txt")],
    }
    s = Scenario.new(world, models, f"Runner dies {t}").plans(plan)
    s.agent("S1", f"Survivor {t}", [create("r.txt", "reaped\n", 8), finish()]).script()
    await s.label(bot)
    client = Redis.from_url(redis.url)
    try:

        def claimed() -> str | None:
            state = s.run(bot)
            if state is None or state["stories"].get("S1", {}).get("state") != "running":
                return None
            holder = get(client, f"baro:lease:{state['id']}:S1")
            text = holder.decode() if holder else ""
            return text if text and not text.startswith("queued:") else None

        holder = await wait_for(claimed, 60, "the runner to claim S1's lease")
        assert holder.endswith(":1")
        await s.sent("S1", 20)
        bot.procs["runner"].kill()
        bot.procs["runner"].wait(10)
        bot.start("runner-2")

        state = await s.ended(bot, timeout=90)
    finally:
        client.close()
    assert state["state"] == "done", state["stories"]
    s1 = state["stories"]["S1"]
    assert s1["state"] == "landed"
    assert (s1["attempts"], s1["infra_retries"], s1["story_retries"]) == (2, 1, 0)
    assert s1["failure"] is None
    log = s.subjects(state["branch"])
    assert len(log) == 2 and log[0] == f"S1: Survivor {t}"  # one commit on the base
    assert world.state.read_file(s.repo, state["branch"], "r.txt") == b"reaped\n"
    # Attempt 1 only started its first turn; attempt 2 ran both.
    seen = s.requests("S1")
    assert sorted(r.turn for r in seen) == [0, 0, 1]
    assert_retries_told(kickoffs(seen), "the runner stopped responding (lease expired)")
    # app/worker/main.py:reap logs what the pass reaped, `<run>:<story>`, comma-separated.
    reaped = worker_says(bot, "reaped stories with expired leases: ")
    assert [m for m in reaped if f"{state['id']}:S1" in m.split(": ", 1)[1].split(", ")], reaped
    assert len(world.state.pulls(s.repo)) == 1


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


async def test_checks_run_again_after_a_clean_rebase_over_the_storys_files(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    """S2's check passes on the base it started from, but not with S1's change to the same
    file, which git merges without a conflict: S2 must not land on its stale green."""
    t = tag()
    s2_check = "! grep -q 'v0 = 10' a.py && grep -q 'v7 = 70' a.py"
    plan = {
        "summary": "Two edits.",
        "design_note": "a.py only.",
        "stories": [
            story("S1", f"Top line {t}", [], "a.py", "grep -q 'v0 = 10' a.py"),
            story("S2", f"Bottom line {t}", [], "a.py", s2_check),
        ],
    }
    files: dict[str, str | bytes] = {"a.py": "".join(f"v{i} = {i}\n" for i in range(8))}
    s = Scenario.new(world, models, f"Same file {t}", files).plans(plan)
    bottom = edit("a.py", "v7 = 7", "v7 = 70", latency=5)  # after S1 has landed
    s.agent("S1", f"Top line {t}", [edit("a.py", "v0 = 0", "v0 = 10"), finish()])
    s.agent("S2", f"Bottom line {t}", [bottom, finish(), finish(), finish()]).script()
    await s.label(runners_bot)

    state = await s.ended(runners_bot, timeout=120)
    stories = state["stories"]
    assert {sid: r["state"] for sid, r in stories.items()} == {"S1": "landed", "S2": "failed"}
    assert stories["S2"]["failure_kind"] == "verification"
    branch = state["branch"]
    assert s.subjects(branch)[:-1] == [f"S1: Top line {t}"]
    assert world.state.read_file(s.repo, branch, "a.py").splitlines()[-1] == b"v7 = 7"
    # The first attempt failed on the re-check after its rebase; the retry was told so.
    retry = kickoffs(s.requests("S2"))[1]
    assert "A previous attempt at this story failed" in retry
    assert "after rebasing onto stories that also changed a.py" in retry

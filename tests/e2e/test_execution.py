"""Issue #4/#5 end to end: a planned run executes on real runners and lands commits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.conftest import RedisServer
from tests.e2e.conftest import DEFAULT_SCRIPT
from tests.e2e.harness import Bot, World, bot_env, new_bot
from tests.e2e.scenario import Scenario, story
from tests.e2e.scenario import git_log as branch_log

__all__ = ["story"]  # imported from here by other modules


PLAN = {
    "summary": "Greetings in three files.",
    "design_note": "Plain text files at the repository root.",
    "stories": [
        story("S1", "Hello file", [], "hello.txt", "grep -q hello hello.txt"),
        story("S2", "World file", [], "world.txt", "grep -q world world.txt"),
        story("S3", "Both file", ["S1", "S2"], "both.txt", "grep -q 'hello world' both.txt"),
    ],
}


def writes(path: str, text: str) -> list[dict[str, Any]]:
    """A story agent's turns: create the file, then finish."""
    return [
        {
            "tool_calls": [
                {
                    "name": "editor",
                    "arguments": {"command": "create", "path": path, "file_text": text},
                }
            ],
            "usage": {"input": 800, "output": 60},
        },
        {
            "tool_calls": [{"name": "finish", "arguments": {"summary": f"Created {path}."}}],
            "usage": {"input": 900, "cached": 800, "output": 20},
        },
    ]


def greeting_rules(title: str) -> list[dict[str, Any]]:
    """The planner submits PLAN for `title`; each story writes its greeting."""
    return [
        {
            "name": "plan",
            "match": {"system": "baro's planner", "first_user": title},
            "turns": [{"tool_calls": [{"name": "submit_plan", "arguments": PLAN}]}],
        },
        {
            "name": "S1",
            "match": {"first_user": "Implement story S1"},
            "turns": writes("hello.txt", "hello\n"),
        },
        {
            "name": "S2",
            "match": {"first_user": "Implement story S2"},
            "turns": writes("world.txt", "world\n"),
        },
        {
            "name": "S3",
            "match": {"first_user": "Implement story S3"},
            "turns": writes("both.txt", "hello world\n"),
        },
    ]


def script(title: str) -> dict[str, Any]:
    return {"rules": [*greeting_rules(title), *DEFAULT_SCRIPT["rules"]]}


@pytest.fixture(scope="module")
def runners_bot(world: World, e2e_redis: RedisServer, models: RunningModelServer) -> Iterator[Bot]:
    running = new_bot(bot_env(world.testbed, world.app, e2e_redis.url, models.url))
    running.start_all(runners=2)
    yield running
    running.stop()


def git_log(world: World, repo: Any, branch: str) -> list[str]:
    """`tests.e2e.scenario.git_log` under its older signature."""
    return branch_log(repo, branch)


async def test_label_to_landed_commits(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    files: dict[str, str | bytes] = {
        "README.md": "# Greetings\n",
        ".github/baro.yml": "verify:\n  - test -f README.md && test ! -e broken.flag\n",
    }
    s = Scenario.new(world, models, "Greet the world", files)
    s.rule(*greeting_rules(s.title)).script()
    repo, issue = s.repo, s.issue
    await s.label(runners_bot)

    state = await s.ended(runners_bot, what="the run to finish")
    assert state["state"] == "done", json.dumps(
        {k: state[k] for k in ("state", "failure", "stories", "verification")}, indent=1
    )[:3000]
    assert {sid: s["state"] for sid, s in state["stories"].items()} == {
        "S1": "landed",
        "S2": "landed",
        "S3": "landed",
    }
    branch = state["branch"]
    log = git_log(world, repo, branch)
    subjects = [entry.split("\x00")[0] for entry in log]
    assert subjects[0] == "S3: Both file"
    assert sorted(subjects[1:3]) == ["S1: Hello file", "S2: World file"]
    assert len(subjects) == 4  # three stories on top of the initial commit
    assert f"Baro-Run: {state['id']}" in log[0]
    assert "Baro-Story: S3" in log[0]
    assert "Co-authored-by: maintainer <" in log[0]
    assert world.state.read_file(repo, branch, "both.txt") == b"hello world\n"
    assert state["stories"]["S1"]["sha"]
    assert state["stories"]["S1"]["input_tokens"] == 1700 + 800
    comment = await s.comment_says("- [x] **S3**", timeout=10)
    assert "- [x] **S1**" in comment.body and "- [x] **S2**" in comment.body

    pulls = world.state.pulls(repo)
    assert len(pulls) == 1
    pull = pulls[0]
    assert (pull.head_ref, pull.base_ref, pull.draft) == (branch, "main", False)
    assert pull.issue.body.startswith(f"Closes #{issue.number}")
    assert "S3" in pull.issue.body and "```mermaid" in pull.issue.body
    assert "test ! -e broken.flag" in pull.issue.body  # the verification result
    # the review request is a spaced write after the PR and the final comment
    reviewers = await wait_for(
        lambda: [u.login for u in world.state.get_pull(repo, pull.number).requested_reviewers],
        10,
        "the review request",
    )
    assert reviewers == ["maintainer"]
    assert state["verification"][0]["passed"] is True
    final = await s.comment_says("/pull/", timeout=10)
    assert f"/pull/{pull.number}" in final.body

    # the state label is the run's last write, after the review request
    def final_label() -> bool:
        labels = world.state.labels(repo, issue.number)
        return "baro:done" in labels and "baro:running" not in labels

    await wait_for(final_label, 10, "the done label in place of the running one")
    client = Redis.from_url(runners_bot.env["BARO_REDIS_URL"])
    transcript = client.get(f"baro:transcript:{state['id']}:S3:1")
    client.close()
    assert transcript is not None
    assert b"Implement story S3" in transcript and b"both.txt" in transcript


async def test_red_verification_gets_one_fix_story(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    # Each story alone passes; together they need combined.ok, which the fix story adds.
    verify = 'test "$(cat a.txt b.txt 2>/dev/null | wc -l)" -lt 2 -o -e combined.ok'
    files: dict[str, str | bytes] = {
        "README.md": "# x\n",
        ".github/baro.yml": f"verify:\n  - '{verify}'\n",
    }
    s = Scenario.new(world, models, "Integration needs a fix", files)
    plan = {
        "summary": "Two files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", "A file", [], "a.txt", "test -f a.txt"),
            story("S2", "B file", [], "b.txt", "test -f b.txt"),
        ],
    }
    s.plans(plan).agent("S1", "A file", writes("a.txt", "a\n"))
    s.agent("S2", "B file", writes("b.txt", "b\n"))
    s.agent("S3", "Make the verification pass", writes("combined.ok", "ok\n"), key="fix")
    s.script(defaults=False)
    await s.label(runners_bot)

    state = await s.ended(runners_bot, what="the run to finish")
    assert state["state"] == "done", state["stories"]
    assert state["fix_story"] == "S3"
    assert state["stories"]["S3"]["state"] == "landed"
    assert [v["passed"] for v in state["verification"]] == [True]
    fix = state["plan"]["stories"][-1]
    assert fix["id"] == "S3"
    assert fix["tests"] == [verify]
    assert "(exit code 1)" in fix["description"]
    assert (
        s.subjects(state["branch"])[0] == "S3: Make the verification pass on the integrated branch"
    )
    assert len(world.state.pulls(s.repo)) == 1


def bash(command: str) -> dict[str, Any]:
    return {
        "tool_calls": [{"name": "bash", "arguments": {"command": command}}],
        "usage": {"input": 800, "output": 40},
    }


async def test_a_refused_change_is_undone_by_the_agent_and_reported(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    """A story agent vendors a library as a nested repository: baro refuses it inside the
    attempt, the agent removes the `.git`, the story lands, and the PR says what was refused."""
    s = Scenario.new(world, models, "Vendor a helper", {"README.md": "# x\n"})
    plan = {
        "summary": "Vendor one helper.",
        "design_note": "Plain files under vendor/.",
        "stories": [story("S1", "Vendored helper", [], "vendor/x.txt", "test -f vendor/x.txt")],
    }
    planting = "mkdir -p vendor && cd vendor && git init -q . && echo x > x.txt"
    turns = [
        bash(planting),
        writes("vendor/x.txt", "x\n")[1],
        bash("rm -rf vendor/.git"),
        writes("vendor/x.txt", "x\n")[1],
    ]
    s.plans(plan).agent("S1", "Vendored helper", turns).script(defaults=False)
    await s.label(runners_bot)

    state = await s.ended(runners_bot, what="the run to finish")
    assert state["state"] == "done", state["stories"]
    refusals = state["stories"]["S1"]["refusals"]
    assert [line.split(":")[0] for line in refusals] == ["vendor/.git"], refusals
    assert world.state.read_file(s.repo, state["branch"], "vendor/x.txt") == b"x\n"
    assert world.state.read_file(s.repo, state["branch"], "vendor/.git/config") is None
    body = world.state.pulls(s.repo)[0].issue.body or ""
    assert "## Refused changes" in body and "**S1** vendor/.git: a nested git repository" in body


def test_runners_warmed_their_mirrors_while_the_runs_above_were_planned(runners_bot: Bot) -> None:
    """Planning announces its base (`app.warmup`); a runner fetched it before any story
    needed it at least once over the runs above (each on a new repository)."""
    assert "warmed the mirror of" in runners_bot.logs()


def test_no_secret_reaches_logs_comments_or_prompts(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    """After the runs above: every token, key and secret the bot used is absent from the
    processes' logs, every comment and PR body, and everything sent to the models."""
    from tests.e2e.harness import PLANNER_KEY

    secrets = {
        "webhook secret": world.app.webhook_secret,
        "model key": PLANNER_KEY,
        "private key": world.app.private_key_pem.splitlines()[1],
        **{f"token {t[:8]}": t for t in list(world.state.tokens)},
    }
    assert len(secrets) > 3  # installation tokens were minted
    logs = runners_bot.logs()
    texts = [
        c.body
        for repo in world.state.repos.values()
        for i in repo.issues.values()
        for c in world.state.comments(repo, i.number)
    ]
    texts += [
        p.issue.body or "" for repo in world.state.repos.values() for p in world.state.pulls(repo)
    ]
    prompts = [json.dumps(r.body) for r in models.requests]
    for name, value in secrets.items():
        assert value not in logs, name
        assert not any(value in text for text in texts), name
        assert not any(value in prompt for prompt in prompts), name

"""The review phase end to end: a scripted reviewer against the real bot, runners and testbed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.models.harness import RunningModelServer
from tests.conftest import RedisServer
from tests.e2e.harness import Bot, World, bot_env, new_bot
from tests.e2e.scenario import Scenario


@pytest.fixture(scope="module")
def review_bot(world: World, e2e_redis: RedisServer, models: RunningModelServer) -> Iterator[Bot]:
    running = new_bot(bot_env(world.testbed, world.app, e2e_redis.url, models.url))
    running.start_all(runners=2)
    yield running
    running.stop()


def story(sid: str, title: str, path: str) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title,
        "description": f"Write {path}.",
        "depends_on": [],
        "writes": [path],
        "acceptance": [f"{path} lists the b row"],
        "tests": [f"test -f {path}"],
        "tier": "light",
    }


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "tool_calls": [{"name": name, "arguments": arguments}],
        "usage": {"input": 700, "output": 50},
    }


def writes(path: str, text: str) -> list[dict[str, Any]]:
    return [
        call("editor", command="create", path=path, file_text=text),
        call("finish", summary=f"Wrote {path}."),
    ]


def reviewer(repo: Any, round_: int, findings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": f"review {round_} {repo.name}",
        "match": {
            "system": "baro's reviewer",
            "first_user": f"Repository: {repo.full_name}. Review round {round_}.",
        },
        "turns": [
            call("list_files"),
            {
                "tool_calls": [
                    {
                        "name": "submit_review",
                        "arguments": {"summary": f"round {round_}", "findings": findings},
                    }
                ],
                "usage": {"input": 3000, "output": 200},
            },
        ],
    }


DUPLICATE = {
    "severity": "blocking",
    "file": "docs/b.md",
    "line": 1,
    "problem": "the b row is also in docs/a.md: two stories added it",
    "story": "S2",
}


async def test_a_duplicate_found_in_review_is_fixed_then_reviewed_again(
    world: World, review_bot: Bot, models: RunningModelServer
) -> None:
    s = rows(world, models, {"README.md": "# rows\n"})
    repo, title = s.repo, s.title
    hint = {
        "severity": "warning",
        "file": "docs/a.md",
        "line": 1,
        "problem": "a header row would help",
        "story": "S1",
    }
    fix = {
        "name": f"fix {title}",
        "match": {"first_user": "Implement story S3: Address the review of docs/b.md"},
        "turns": [call("bash", command="rm docs/b.md"), call("finish", summary="Removed it.")],
    }
    s.script(reviewer(repo, 1, [DUPLICATE]), reviewer(repo, 2, [hint]), fix)
    await s.label(review_bot)

    state = await s.ended(review_bot, what="the reviewed run")
    assert state["state"] == "done", state["stories"]
    rounds = state["reviews"]
    assert [len(r["findings"]) for r in rounds] == [1, 1]
    assert rounds[0]["fixes"] == ["S3"] and rounds[1]["fixes"] == []
    assert rounds[0]["stats"]["input_tokens"] == 3700  # two calls of the scripted reviewer
    assert state["stories"]["S3"]["state"] == "landed"
    branch = state["branch"]
    assert world.state.read_file(repo, branch, "docs/b.md") is None
    assert world.state.read_file(repo, branch, "docs/a.md") == b"| b | 2 |\n"

    pull = world.state.pulls(repo)[0]
    body = pull.issue.body or ""
    assert "## Review" in body and "fix stories S3" in body
    assert "| review | 2 rounds |" in body  # the review's tokens and cost in the phase table
    reviews = world.state.reviews(repo, pull.number)
    assert len(reviews) == 1 and state["review_posted"] is True
    review = reviews[0]
    assert review.state == "COMMENTED" and review.user.login == world.app.bot.login
    assert "1 blocking finding(s) fixed" in review.body
    assert [(c.path, c.line) for c in review.comments] == [("docs/a.md", 1)]
    assert "a header row would help" in review.comments[0].body


async def test_a_clean_review_says_so_in_one_line(
    world: World, review_bot: Bot, models: RunningModelServer
) -> None:
    s = rows(world, models, {"README.md": "# rows\n"})
    repo = s.repo
    s.script(reviewer(repo, 1, []))
    await s.label(review_bot)

    state = await s.ended(review_bot, what="the reviewed run")
    assert state["state"] == "done", state["stories"]
    assert [r["findings"] for r in state["reviews"]] == [[]]
    pull = world.state.pulls(repo)[0]
    (review,) = world.state.reviews(repo, pull.number)
    assert review.body == "✅ baro's review found nothing left to change."
    assert review.comments == []


async def test_a_failed_review_does_not_cost_the_pull_request(
    world: World, review_bot: Bot, models: RunningModelServer
) -> None:
    s = rows(world, models, {"README.md": "# rows\n"})
    repo = s.repo
    broken = {
        "name": f"review {s.title}",
        "match": {"system": "baro's reviewer", "first_user": repo.full_name},
        "turns": [{"fault": {"kind": "http", "status": 401}}],
    }
    s.script(broken)
    await s.label(review_bot)

    state = await s.ended(review_bot, what="the run")
    assert state["state"] == "done", state["stories"]
    (round_,) = state["reviews"]
    assert round_["error"] and "review model failed" in round_["error"]
    pull = world.state.pulls(repo)[0]
    assert "Round 1" in (pull.issue.body or "") and "not made" in (pull.issue.body or "")
    assert world.state.reviews(repo, pull.number) == []  # nothing to post


async def test_review_false_in_baro_yml_skips_the_phase(
    world: World, review_bot: Bot, models: RunningModelServer
) -> None:
    s = rows(world, models, {"README.md": "# rows\n", ".github/baro.yml": "review: false\n"})
    repo = s.repo
    s.script(reviewer(repo, 1, [DUPLICATE]))
    await s.label(review_bot)

    state = await s.ended(review_bot, what="the run")
    assert state["state"] == "done" and state["reviews"] == []
    assert not [r for r in models.requests if r.rule == f"review 1 {repo.name}"]


def rows(world: World, models: RunningModelServer, files: dict[str, str | bytes]) -> Scenario:
    """A repository and an issue whose plan adds the b row twice (docs/a.md and docs/b.md)."""
    s = Scenario.new(world, models, f"Table rows {uuid.uuid4().hex[:6]}", files)
    plan = {
        "summary": "Add the b row.",
        "design_note": "The b row lives in docs/a.md only.",
        "stories": [story("S1", "Row in a", "docs/a.md"), story("S2", "Row in b", "docs/b.md")],
    }
    s.plans(plan).agent("S1", "Row in a", writes("docs/a.md", "| b | 2 |\n"))
    return s.agent("S2", "Row in b", writes("docs/b.md", "| b | 2 |\n"))

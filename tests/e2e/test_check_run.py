"""The run's check run on its branch, end to end: in progress while stories land, then
success, or failure for a checkpoint; a refused check-run write never fails the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.conftest import RedisServer
from tests.e2e.harness import Bot, World, bot_env, new_bot
from tests.e2e.scenario import Scenario, always_wrong, create, finish, story, tag


@pytest.fixture(scope="module")
def linked_bot(world: World, e2e_redis: RedisServer, models: RunningModelServer) -> Iterator[Bot]:
    """Web, worker and two runners, with a public URL so comments and checks carry links."""
    env = bot_env(
        world.testbed,
        world.app,
        e2e_redis.url,
        models.url,
        BARO_COMMENT_DEBOUNCE_SECONDS="0.5",
        BARO_CHECK_RUN_AFTER_SECONDS="0",  # these runs are short: follow the head at once
    )
    bot = new_bot(env)
    bot.env["BARO_PUBLIC_URL"] = bot.web_url
    bot.start_all(runners=2)
    yield bot
    bot.stop()


def three_stories(t: str) -> dict[str, Any]:
    return {
        "summary": f"Greetings {t}.",
        "design_note": "Text files at the root.",
        "stories": [
            story("S1", f"Hello {t}", [], "hello.txt", "grep -q hello hello.txt"),
            story("S2", f"World {t}", ["S1"], "world.txt", "grep -q world world.txt"),
            story("S3", f"Both {t}", ["S2"], "both.txt", "grep -q both both.txt"),
        ],
    }


def checks_of(world: World, repo: Any, run_id: str) -> list[Any]:
    with world.state.lock:
        return sorted(
            (c for c in repo.check_runs.values() if c.external_id == run_id), key=lambda c: c.id
        )


async def test_the_check_run_follows_the_run_to_success(
    world: World, linked_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    s = Scenario.new(world, models, f"Greet {t}").plans(three_stories(t))
    s.agent("S1", f"Hello {t}", [create("hello.txt", "hello\n"), finish()])
    s.agent("S2", f"World {t}", [create("world.txt", "world\n", 2.0), finish()])
    s.agent("S3", f"Both {t}", [create("both.txt", "both\n"), finish()]).script()
    repo = s.repo
    await s.label(linked_bot)

    # While S2 runs, S1's commit carries the check run, in progress with the checklist.
    live = (
        await wait_for(
            lambda: [
                c
                for c in repo.check_runs.values()
                if c.status == "in_progress" and "1/3 stories landed" in (c.title or "")
            ],
            60,
            "an in-progress check run",
        )
    )[0]
    assert "- [x] **S1**" in live.summary and "- [ ] **S2**" in live.summary
    state = await s.ended(linked_bot)
    assert state["state"] == "done"
    head = world.state.branch_sha(repo, state["branch"])
    assert head is not None
    final = await wait_for(
        lambda: (c := world.state.check_runs(repo, head, "baro")) and c[0].conclusion and c[0],
        15,
        "the final check run",
    )
    assert (final.status, final.conclusion) == ("completed", "success")
    assert final.title == "✅ Done — 3/3 stories landed"
    page = f"{linked_bot.web_url}/runs/{state['id']}?token="
    assert final.details_url.startswith(page)
    assert f"[Run page]({page}" in final.summary
    assert "[Tracking comment](" in final.summary and "#issuecomment-" in final.summary
    assert "tokens" in final.summary and "wall" in final.summary
    # The check runs the moving head left behind are closed (just after the new one is
    # made, so that the head never shows none); the base commit has none.
    await wait_for(
        lambda: all(
            c.status == "completed" for c in checks_of(world, repo, state["id"]) if c.id != final.id
        ),
        15,
        "the left-behind check runs to be closed",
    )
    for older in checks_of(world, repo, state["id"]):
        if older.id != final.id:
            assert (older.status, older.conclusion) == ("completed", "neutral"), older.history
    assert world.state.check_runs(repo, state["base_sha"]) == []
    # The run page link is in the tracking comment and the PR body too.
    pull = world.state.get_pull(repo, state["pr_number"])
    assert page in (pull.issue.body or "")
    assert pull.head_sha == head


async def test_a_checkpoint_concludes_as_failure(
    world: World, linked_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    s = Scenario.new(world, models, f"Half {t}").plans(three_stories(t))
    s.agent("S1", f"Hello {t}", [create("hello.txt", "hello\n"), finish()])
    s.agent("S2", f"World {t}", always_wrong("world.txt")).script()
    repo = s.repo
    await s.label(linked_bot)
    state = await s.ended(linked_bot, timeout=120)
    assert state["state"] == "checkpoint"
    head = world.state.branch_sha(repo, state["branch"])
    assert head is not None
    final = await wait_for(
        lambda: (c := world.state.check_runs(repo, head, "baro")) and c[0].conclusion and c[0],
        15,
        "the final check run",
    )
    assert (final.status, final.conclusion) == ("completed", "failure")
    assert final.title == "⚠️ Checkpoint — 1/3 stories landed"
    assert "1 failed · 1 blocked" in final.summary


async def test_a_refused_check_run_never_fails_the_run(
    world: World, linked_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    plan = three_stories(t)
    plan["stories"] = plan["stories"][:1]
    s = Scenario.new(world, models, f"Refused {t}").plans(plan)
    s.agent("S1", f"Hello {t}", [create("hello.txt", "hello\n"), finish()]).script()
    repo = s.repo
    refusal = world.state.faults.add(
        method="POST",
        path=rf"^/repos/{world.owner}/{repo.name}/check-runs$",
        status=403,
        body={"message": "Resource not accessible by integration"},
        times=None,
    )
    try:
        await s.label(linked_bot)
        state = await s.ended(linked_bot)
        note = f"check run of {state['id']} not written: GitHub answered 403"
        await wait_for(lambda: note in linked_bot.logs("worker"), 15, "the refusal in the log")
    finally:
        world.state.faults.remove(refusal)
    assert state["state"] == "done" and state["pr_number"] is not None
    assert checks_of(world, repo, state["id"]) == []
    assert refusal.hits == 1  # refused once: the run stopped asking

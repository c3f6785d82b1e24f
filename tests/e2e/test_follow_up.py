"""Follow-up runs: `/baro <instructions>` on baro's own pull request plans just that on the
PR's branch and adds its commits there — real web, worker and runners against the testbed."""

from __future__ import annotations

from typing import Any

from testbed.github.gitops import branch_ahead
from testbed.models.harness import RunningModelServer
from tests.e2e.harness import TERMINAL, Bot, World, run_state, tracking, wait_for, wait_run
from tests.e2e.test_execution import runners_bot, story
from tests.e2e.test_failures import (
    agent,
    comment_says,
    create,
    finish,
    labels_once,
    planner,
    subjects,
    tag,
    use,
)

__all__ = ["runners_bot"]

BRANCH_CONFIG = 'verify:\n  - "exit 7"\nbudget_usd: 100\n'
"""What a story wrote into the run branch's `.github/baro.yml`; a follow-up must not obey it."""


def reply_says(world: World, repo: Any, number: int, text: str) -> Any:
    return wait_for(
        lambda: next((c for c in world.bot_comments(repo, number) if text in c.body), None),
        20,
        f"a reply saying {text!r}",
    )


async def test_follow_up_on_the_bots_pull_request_adds_to_its_branch(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    title = f"Greeting {t}"
    repo = world.new_repo(
        {"README.md": "# x\n", ".github/baro.yml": 'verify:\n  - "test -f hello.txt"\n'}
    )
    issue = world.new_issue(repo, title)
    first_plan = {
        "summary": "A greeting.",
        "design_note": "Root files.",
        "stories": [story("S1", f"Hello file {t}", [], "hello.txt", "test -f hello.txt")],
    }
    hello = [
        create("hello.txt", "hello\n"),
        create(".github/baro.yml", BRANCH_CONFIG),
        finish(),
    ]
    ask = f"also add a farewell file {t}"
    follow_plan = {
        "summary": "A farewell.",
        "design_note": "Next to hello.txt.",
        "stories": [story("S1", f"Bye file {t}", [], "bye.txt", "grep -q hello hello.txt")],
    }
    follow_planner = {
        "name": f"follow-up plan {t}",
        "match": {"system": "baro's planner", "first_user": ask},
        "turns": [{"tool_calls": [{"name": "submit_plan", "arguments": follow_plan}]}],
    }
    use(
        models,
        follow_planner,
        planner(title, first_plan),
        agent(f"S1 {t}", "S1", f"Hello file {t}", hello),
        agent(f"bye {t}", "S1", f"Bye file {t}", [create("bye.txt", "bye\n"), finish()]),
    )
    await world.deliver_label(runners_bot, repo, issue.number)
    first = wait_run(world, runners_bot, repo, issue.number)
    assert first["state"] == "done", first
    (pull,) = world.state.pulls(repo)
    body_before = pull.issue.body
    final = comment_says(world, repo, issue.number, "### ✅ Done — 1/1 stories landed")
    issue_comment_before = final.body

    # Without instructions there is nothing to plan: the bot asks for them.
    await world.deliver_comment(runners_bot, repo, pull.number, "/baro")
    reply_says(world, repo, pull.number, "Tell me what to change")
    assert tracking(world, repo, pull.number) is None

    resp = await world.deliver_comment(runners_bot, repo, pull.number, f"/baro {ask}")
    assert resp.status_code == 202, resp.text
    state = wait_run(world, runners_bot, repo, pull.number, timeout=90)
    assert state["state"] == "done", state
    assert state["id"] != first["id"]
    assert state["branch"] == state["pr_branch"] == first["branch"]
    assert state["pr_number"] == pull.number
    # Settings come from the default branch, not from what a story wrote on the run branch.
    assert state["repo_config"]["verify"] == ["test -f hello.txt"]
    assert [v["passed"] for v in state["verification"]] == [True]

    # The follow-up's planner saw the PR and the instructions, framed as a follow-up.
    planned = [r for r in models.requests if r.rule == f"follow-up plan {t}"]
    kickoff = planned[0].body["messages"][1]["content"]
    assert f"Pull request #{pull.number}:" in kickoff
    assert f"This is a follow-up on that pull request. Its branch ({first['branch']})" in kickoff
    assert ask in kickoff and "<untrusted-pull-request-body" in kickoff

    log = subjects(world, repo, first["branch"])
    assert log[:2] == [f"S1: Bye file {t}", f"S1: Hello file {t}"]
    assert world.state.read_file(repo, first["branch"], "bye.txt") == b"bye\n"
    assert world.state.read_file(repo, first["branch"], "hello.txt") == b"hello\n"

    # Still one PR, its description untouched; the follow-up reports on the PR itself.
    (same,) = world.state.pulls(repo)
    assert same.number == pull.number and same.issue.body == body_before
    comment = comment_says(world, repo, pull.number, "### ✅ Done — 1/1 stories landed")
    assert f"**Pull request:** {state['pr_url']}" in comment.body
    labels_once(world, repo, pull.number, "baro:done")
    assert tracking(world, repo, issue.number).body == issue_comment_before

    # A review comment on a line is a follow-up too, and the planner is told where it sits.
    shout = f"shout it {t}"
    use(
        models,
        {
            "name": f"review plan {t}",
            "match": {"system": "baro's planner", "first_user": shout},
            "turns": [
                {
                    "tool_calls": [
                        {
                            "name": "submit_plan",
                            "arguments": {
                                "summary": "Loud.",
                                "design_note": "Root.",
                                "stories": [
                                    story(
                                        "S1", f"Loud file {t}", [], "loud.txt", "test -f loud.txt"
                                    )
                                ],
                            },
                        }
                    ]
                }
            ],
        },
        agent(f"loud {t}", "S1", f"Loud file {t}", [create("loud.txt", "HELLO\n"), finish()]),
    )
    resp = await world.deliver_review_comment(
        runners_bot, repo, pull.number, f"/baro {shout}", path="hello.txt", line=1
    )
    assert resp.status_code == 202, resp.text

    def second_run() -> dict[str, Any] | None:
        runs = [c for c in world.bot_comments(repo, pull.number) if "<!-- baro:run:" in c.body]
        if len(runs) < 2:
            return None
        found = run_state(runners_bot.env["BARO_REDIS_URL"], runs[-1].body)
        return found if found["state"] in TERMINAL else None

    second = wait_for(second_run, 90, "the review comment's follow-up to end")
    assert second["state"] == "done" and second["branch"] == first["branch"], second
    review_plan = next(r for r in models.requests if r.rule == f"review plan {t}")
    assert "(Review comment on hello.txt, line 1.)" in review_plan.body["messages"][1]["content"]
    assert subjects(world, repo, first["branch"])[:3] == [
        f"S1: Loud file {t}",
        f"S1: Bye file {t}",
        f"S1: Hello file {t}",
    ]
    assert len(world.state.pulls(repo)) == 1

    # A closed pull request takes no more follow-ups.
    world.state.update_pull(repo, pull.number, state="closed")
    await world.deliver_comment(runners_bot, repo, pull.number, f"/baro more {t}")
    reply_says(world, repo, pull.number, "This pull request is closed")


async def test_a_baro_named_branch_does_not_make_a_humans_pull_request_baros(
    world: World, runners_bot: Bot
) -> None:
    repo = world.new_repo()
    branch_ahead(repo.git_dir, "baro/issue-1-lookalike")
    theirs = world.state.create_pull(
        repo, title="Looks like baro's", head="baro/issue-1-lookalike", base="main"
    )
    await world.deliver_comment(runners_bot, repo, theirs.number, "/baro tidy this up")
    reply_says(world, repo, theirs.number, "baro starts runs from issues")
    assert tracking(world, repo, theirs.number) is None  # no run was created for it


async def test_a_follow_up_waits_while_a_retry_is_adding_to_the_branch(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    title = f"Busy branch {t}"
    repo = world.new_repo()
    issue = world.new_issue(repo, title)
    plan = {
        "summary": "Two files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Flaky {t}", [], "f.txt", "grep -q right f.txt"),
            story("S2", f"Steady {t}", [], "s.txt", "test -f s.txt"),
        ],
    }
    steady = agent(f"S2 {t}", "S2", f"Steady {t}", [create("s.txt", "s\n"), finish()])
    wrong = [create("f.txt", "wrong\n"), finish(), finish(), finish()]
    use(models, planner(title, plan), agent(f"S1 {t}", "S1", f"Flaky {t}", wrong), steady)
    await world.deliver_label(runners_bot, repo, issue.number)
    first = wait_run(world, runners_bot, repo, issue.number)
    assert first["state"] == "checkpoint", first["stories"]
    (pull,) = world.state.pulls(repo)

    slow_fix = [create("f.txt", "right\n", latency=6), finish()]
    use(models, agent(f"S1 fixed {t}", "S1", f"Flaky {t}", slow_fix), steady)
    await world.deliver_comment(runners_bot, repo, issue.number, "/baro retry")
    wait_run(
        world,
        runners_bot,
        repo,
        issue.number,
        lambda s: s["version"] > first["version"] and s["state"] == "running",
        30,
        "the retry to start",
    )
    await world.deliver_comment(runners_bot, repo, pull.number, f"/baro polish it {t}")
    busy = reply_says(world, repo, pull.number, "is still adding commits to")
    assert first["id"] in busy.body and f"`{first['branch']}`" in busy.body
    assert tracking(world, repo, pull.number) is None  # no follow-up run was started

    done = wait_run(
        world,
        runners_bot,
        repo,
        issue.number,
        lambda s: s["version"] > first["version"] and s["state"] in TERMINAL,
        60,
        "the retry to end",
    )
    assert done["state"] == "done", done["stories"]

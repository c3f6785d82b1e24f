"""Follow-up runs: `/baro <instructions>` on baro's own pull request plans just that on the
PR's branch and adds its commits there — real web, worker and runners against the testbed."""

from __future__ import annotations

from typing import Any

from testbed.github.gitops import branch_ahead
from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_for
from tests.e2e.harness import TERMINAL, Bot, World, run_state, tracking
from tests.e2e.scenario import Scenario, create, finish, story, tag
from tests.e2e.test_execution import runners_bot

__all__ = ["runners_bot"]

BRANCH_CONFIG = 'verify:\n  - "exit 7"\nbudget_usd: 100\n'
"""What a story wrote into the run branch's `.github/baro.yml`; a follow-up must not obey it."""


async def test_follow_up_on_the_bots_pull_request_adds_to_its_branch(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    files: dict[str, str | bytes] = {
        "README.md": "# x\n",
        ".github/baro.yml": 'verify:\n  - "test -f hello.txt"\n',
    }
    s = Scenario.new(world, models, f"Greeting {t}", files)
    repo, issue = s.repo, s.issue
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
    s.rule(follow_planner).plans(first_plan).agent("S1", f"Hello file {t}", hello)
    s.agent("S1", f"Bye file {t}", [create("bye.txt", "bye\n"), finish()], key="bye").script()
    await s.label(runners_bot)
    first = await s.ended(runners_bot)
    assert first["state"] == "done", first
    (pull,) = world.state.pulls(repo)
    body_before = pull.issue.body
    final = await s.comment_says("### ✅ Done — 1/1 stories landed")
    issue_comment_before = final.body

    # Without instructions there is nothing to plan: the bot asks for them.
    await s.comment(runners_bot, "/baro", pull.number)
    await s.reply_says("Tell me what to change", pull.number)
    assert tracking(world, repo, pull.number) is None

    resp = await s.comment(runners_bot, f"/baro {ask}", pull.number)
    assert resp.status_code == 202, resp.text
    state = await s.ended(runners_bot, timeout=90, number=pull.number)
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

    log = s.subjects(first["branch"])
    assert log[:2] == [f"S1: Bye file {t}", f"S1: Hello file {t}"]
    assert world.state.read_file(repo, first["branch"], "bye.txt") == b"bye\n"
    assert world.state.read_file(repo, first["branch"], "hello.txt") == b"hello\n"

    # Still one PR, its description untouched; the follow-up reports on the PR itself.
    (same,) = world.state.pulls(repo)
    assert same.number == pull.number and same.issue.body == body_before
    comment = await s.comment_says("### ✅ Done — 1/1 stories landed", pull.number)
    assert f"**Pull request:** {state['pr_url']}" in comment.body
    await s.labels_once("baro:done", pull.number)
    assert tracking(world, repo, issue.number).body == issue_comment_before

    # A review comment on a line is a follow-up too, and the planner is told where it sits.
    shout = f"shout it {t}"
    s.script(
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
        s.agent_rule("S1", f"Loud file {t}", [create("loud.txt", "HELLO\n"), finish()], "loud"),
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

    second = await wait_for(second_run, 90, "the review comment's follow-up to end")
    assert second["state"] == "done" and second["branch"] == first["branch"], second
    review_plan = next(r for r in models.requests if r.rule == f"review plan {t}")
    assert "(Review comment on hello.txt, line 1.)" in review_plan.body["messages"][1]["content"]
    assert s.subjects(first["branch"])[:3] == [
        f"S1: Loud file {t}",
        f"S1: Bye file {t}",
        f"S1: Hello file {t}",
    ]
    assert len(world.state.pulls(repo)) == 1

    # A closed pull request takes no more follow-ups.
    world.state.update_pull(repo, pull.number, state="closed")
    await s.comment(runners_bot, f"/baro more {t}", pull.number)
    await s.reply_says("This pull request is closed", pull.number)


async def test_a_baro_named_branch_does_not_make_a_humans_pull_request_baros(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    s = Scenario.new(world, models, f"Lookalike {tag()}")
    branch_ahead(s.repo.git_dir, "baro/issue-1-lookalike")
    theirs = world.state.create_pull(
        s.repo, title="Looks like baro's", head="baro/issue-1-lookalike", base="main"
    )
    await s.comment(runners_bot, "/baro tidy this up", theirs.number)
    await s.reply_says("baro starts runs from issues", theirs.number)
    assert tracking(world, s.repo, theirs.number) is None  # no run was created for it


async def test_a_follow_up_waits_while_a_retry_is_adding_to_the_branch(
    world: World, runners_bot: Bot, models: RunningModelServer
) -> None:
    t = tag()
    s = Scenario.new(world, models, f"Busy branch {t}")
    repo = s.repo
    plan = {
        "summary": "Two files.",
        "design_note": "Root files.",
        "stories": [
            story("S1", f"Flaky {t}", [], "f.txt", "grep -q right f.txt"),
            story("S2", f"Steady {t}", [], "s.txt", "test -f s.txt"),
        ],
    }
    wrong = [create("f.txt", "wrong\n"), finish(), finish(), finish()]
    s.plans(plan).agent("S2", f"Steady {t}", [create("s.txt", "s\n"), finish()])
    s.script(s.agent_rule("S1", f"Flaky {t}", wrong))
    await s.label(runners_bot)
    first = await s.ended(runners_bot)
    assert first["state"] == "checkpoint", first["stories"]
    (pull,) = world.state.pulls(repo)

    slow_fix = [create("f.txt", "right\n", latency=6), finish()]
    s.script(s.agent_rule("S1", f"Flaky {t}", slow_fix, key="S1 fixed"))
    await s.comment(runners_bot, "/baro retry")
    await s.ended(
        runners_bot,
        lambda r: r["version"] > first["version"] and r["state"] == "running",
        30,
        "the retry to start",
    )
    await s.comment(runners_bot, f"/baro polish it {t}", pull.number)
    busy = await s.reply_says("is still adding commits to", pull.number)
    assert first["id"] in busy.body and f"`{first['branch']}`" in busy.body
    assert tracking(world, repo, pull.number) is None  # no follow-up run was started

    done = await s.ended(
        runners_bot,
        lambda r: r["version"] > first["version"] and r["state"] in TERMINAL,
        60,
        "the retry to end",
    )
    assert done["state"] == "done", done["stories"]

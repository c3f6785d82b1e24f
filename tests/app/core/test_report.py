"""Tracking comment rendering: snapshots, escaping, and the comment size limit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.core.markdown import (
    COMMENT_LIMIT,
    escape_inline,
    fit_comment,
    format_cost,
    format_duration,
    mermaid_label,
)
from app.core.plan import Plan, PlanStats, StoryProgress, parse_plan
from app.core.report import (
    COMMANDS,
    checklist_line,
    find_run_id,
    marker,
    next_commands,
    render_failed,
    render_help,
    render_plan,
    render_queued,
)
from tests.snapshots import snapshots

assert_snapshot = snapshots(Path(__file__).parent / "snapshots")


def story(sid: str, title: str, deps: list[str], tier: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title,
        "description": f"Implement {title}.",
        "depends_on": deps,
        "writes": [f"src/reservations/{sid.lower()}.ts"],
        "acceptance": ["it works"],
        "tests": [],
        "tier": tier,
        **extra,
    }


def six_story_plan() -> Plan:
    plan = parse_plan(
        {
            "summary": "Add a reservations module: entity, service with no-overlap and "
            "capacity rules, and a REST controller.",
            "design_note": "## Files\n\n"
            "- `src/reservations/status.ts`: `ReservationStatus` enum\n"
            "- The service rejects overlaps with `ConflictException`.\n\n"
            "```ts\nexport enum ReservationStatus { Pending = 'pending' }\n```\n\n"
            "Ask @maintainer if unsure.",
            "stories": [
                story("S1", "Reservation status enum", [], "light"),
                story("S2", "Reservation entity & migration", ["S1"], "standard"),
                story("S3", "DTOs <create/update> with `class-validator`", ["S1"], "light"),
                story(
                    "S4", "Reservation service (no-overlap, capacity) [core]", ["S2", "S3"], "heavy"
                ),
                story("S5", 'Controller "reservations" | REST #routes', ["S4"], "standard"),
                story("S6", "Service spec *unit* tests_ for @alice", ["S4"], "standard"),
            ],
        }
    )
    assert isinstance(plan, Plan), plan
    return plan


def assert_balanced(body: str) -> None:
    """Every ``` fence and <details> opened outside code is closed again."""
    in_fence = False
    depth = 0
    for line in body.split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            depth += line.count("<details") - line.count("</details>")
    assert not in_fence, "an open ``` fence"
    assert depth == 0, "an open <details>"


# --- snapshots ----------------------------------------------------------------------------


def test_plan_snapshot() -> None:
    stats = PlanStats(model="planner-x", input_tokens=10_000, output_tokens=2_345, cost_usd=0.0123)
    body = render_plan("42-a1b2", six_story_plan(), stats=stats, state="planned")
    assert_snapshot("plan_6_stories.md", body)
    assert_balanced(body)


def test_running_plan_snapshot() -> None:
    progress = {
        "S1": StoryProgress(state="landed", duration_s=133, model="deepseek-flash", cost_usd=0.004),
        "S2": StoryProgress(state="running", model="deepseek-flash", attempts=1),
        "S3": StoryProgress(state="failed", attempts=2, note="tests failed"),
        "S4": StoryProgress(state="blocked", note="waits on S3"),
    }
    body = render_plan(
        "42-a1b2",
        six_story_plan(),
        stats=PlanStats(input_tokens=500, output_tokens=100),
        state="running",
        auto_execute=True,
        progress=progress,
    )
    assert_snapshot("plan_6_stories_running.md", body)


def test_queued_snapshot() -> None:
    body = render_queued(
        "42-a1b2", requester="alice", trigger="label baro", instructions="use @bob's style"
    )
    assert_snapshot("queued.md", body)


def test_failed_snapshot() -> None:
    body = render_failed(
        "42-a1b2",
        "the plan was invalid after 2 repair rounds",
        ['stories[2].depends_on: unknown story "S9"', "cycle: S2 → S4 → S2"],
    )
    assert_snapshot("failed.md", body)


def test_help_snapshot() -> None:
    assert_snapshot("help.md", render_help())


# --- structure and content ----------------------------------------------------------------


def test_marker_is_first_line_and_round_trips() -> None:
    plan = six_story_plan()
    for body in (
        render_queued("r-1", requester="alice", trigger="comment"),
        render_plan("r-1", plan),
        render_failed("r-1", "boom"),
    ):
        assert body.split("\n", 1)[0] == "<!-- baro:run:r-1 -->"
        assert find_run_id(body) == "r-1"
    assert find_run_id("hello\n<!-- baro:run:r-1 -->") is None
    with pytest.raises(ValueError):
        marker("x --> <script>")


def test_checklist_is_in_topological_order_with_deps() -> None:
    body = render_plan("r", six_story_plan())
    items = [line for line in body.split("\n") if line.startswith("- [")]
    ids = [re.findall(r"\*\*(S\d+)\*\*", item)[0] for item in items]
    assert ids == ["S1", "S2", "S3", "S4", "S5", "S6"]
    assert items[0].endswith(" · light · deps: –")
    assert items[3].endswith(" · heavy · deps: S2, S3")


def test_numbers_and_unknown_cost() -> None:
    body = render_plan("r", six_story_plan(), stats=PlanStats(input_tokens=7, output_tokens=3))
    assert "| 6 | 4 | 2 | S1 → S2 → S4 → S5 (weight 8) | 10 | unknown |" in body
    assert "$0" not in body


def test_mermaid_graph_highlights_the_critical_path() -> None:
    body = render_plan("r", six_story_plan())
    graph = body[body.index("```mermaid") : body.index("```", body.index("```mermaid") + 3)]
    assert "flowchart TD" in graph
    assert "    S1 --> S2" in graph
    assert "    class S1,S2,S4,S5 critical" in graph
    assert "    linkStyle 0,2,4 " in graph  # S1→S2, S2→S4, S4→S5 in edge order
    labels = re.findall(r'^    S\d+\["(.*)"\]$', graph, re.MULTILINE)
    assert len(labels) == 6
    for label in labels:
        assert not set(label) & set('"`[]<>(){}|'), label


def test_commands_depend_on_state() -> None:
    assert "/baro approve" in next_commands("planned", auto_execute=False)
    assert "/baro approve" not in next_commands("planned", auto_execute=True)
    assert "/baro retry [S3 …]" in next_commands("checkpoint", auto_execute=True)
    waiting = render_plan("r", six_story_plan(), auto_execute=False)
    assert "`/baro approve`" in waiting.split("\n")[-1]
    custom = render_plan("r", six_story_plan(), commands=["/baro status"])
    assert custom.split("\n")[-1] == "**Next:** `/baro status` to refresh"


def test_help_lists_every_command() -> None:
    body = render_help()
    for command in COMMANDS:
        assert f"`{command}`" in body
    assert "/baro retry [S3 …]" in body


def test_failed_comment_says_what_to_do() -> None:
    body = render_failed("r", "verification failed", "```\nboom\n````", next_step="fix it.")
    assert "**What happened:** verification failed" in body
    assert "**What to do:** fix it." in body
    assert "`````text\n" in body  # fence longer than any backtick run in the details
    assert_balanced(body.replace("`````", "```"))


# --- escaping -----------------------------------------------------------------------------


def test_escape_inline_neutralises_markdown_html_and_mentions() -> None:
    text = "**bold** `code` [link](x) <script> a|b @alice\u200b\nnext"
    assert escape_inline(text) == (
        r"\*\*bold\*\* \`code\` \[link\](x) \<script\> a\|b @&#8203;alice next"
    )
    assert escape_inline("mail a@b.com") == "mail a@b.com"
    assert escape_inline("x" * 50, max_len=10) == "xxxxxxxxx…"


def test_mermaid_label_escapes() -> None:
    label = mermaid_label('a "b" [c] `d` <e> #1; f(g) {h} |i| & \n j', max_len=200)
    assert label == (
        "a #quot;b#quot; #91;c#93; #96;d#96; #60;e#62; #35;1#59; f#40;g#41; "
        "#123;h#125; #124;i#124; #38; j"
    )


def test_model_markdown_cannot_break_the_comment() -> None:
    plan = parse_plan(
        {
            "summary": "s <!-- hidden",
            "design_note": "intro @team\n</details>\n<!-- secret -->\n```python\nopen fence",
            "stories": [story("S1", "t", [], "light")],
        }
    )
    assert isinstance(plan, Plan)
    body = render_plan("r", plan)
    assert "hidden" not in body and "secret" not in body
    assert "@&#8203;team" in body
    assert "&lt;/details>" in body
    assert_balanced(body)
    assert body.index("open fence\n```") < body.rindex("</details>")


def test_progress_suffixes() -> None:
    plan = six_story_plan()
    landed = checklist_line(plan.story("S1"), StoryProgress(state="landed", duration_s=75))
    assert landed.startswith("- [x] **S1** ")
    assert landed.endswith(" ✅ 1m15s · unknown")  # unknown cost, never $0
    pending = checklist_line(plan.story("S1"), StoryProgress())
    assert pending == "- [ ] **S1** Reservation status enum · light · deps: –"


def test_formatters() -> None:
    assert format_cost(None) == "unknown"
    assert format_cost(0.004) == "$0.004"
    assert format_cost(0.0123) == "$0.0123"
    assert format_cost(0.5) == "$0.50"
    assert format_cost(12.345) == "$12.35"
    assert format_cost(0.00001) == "<$0.0001"
    assert format_duration(5) == "5s"
    assert format_duration(133) == "2m13s"
    assert format_duration(3725) == "1h02m"
    assert format_duration(None) == "unknown"


# --- size limit ---------------------------------------------------------------------------


def huge_plan() -> Plan:
    title = ("Very long title with `code`, <tags>, | pipes & @mentions " * 20)[:500]
    note = "\n".join(f"Design line {i}: keep `names` stable, see @owner." for i in range(1200))
    note = note[:25_000] + "\n```python\n" + note[25_000:]  # a fence the cut will land in
    assert len(note) > 50_000
    stories = [
        story(f"S{i}", title, [f"S{i - 1}"] if i % 3 != 1 else [], "heavy") for i in range(1, 26)
    ]
    plan = parse_plan({"summary": "x " * 2000, "design_note": note, "stories": stories})
    assert isinstance(plan, Plan)
    return plan


def test_huge_plan_fits_in_a_comment() -> None:
    body = render_plan("r-big", huge_plan(), stats=PlanStats(input_tokens=1, output_tokens=1))
    assert len(body) <= COMMENT_LIMIT
    assert len(body.encode("utf-16-le")) // 2 <= COMMENT_LIMIT
    assert body.startswith("<!-- baro:run:r-big -->\n")
    assert len([line for line in body.split("\n") if line.startswith("- [ ] **S")]) == 25
    assert "```mermaid" in body
    assert "_… truncated (comment size limit)._" in body
    assert body.endswith("`/baro help` for all commands")
    assert_balanced(body)


@pytest.mark.parametrize("limit", [600, 1200, 2500, 4000, 8000, 20_000])
def test_fit_comment_gives_up_parts_in_order(limit: int) -> None:
    body = render_plan("r-big", huge_plan(), limit=10**9)
    fitted = fit_comment(body, limit)
    assert len(fitted.encode("utf-16-le")) // 2 <= limit
    assert fitted.startswith("<!-- baro:run:r-big -->\n")
    assert_balanced(fitted)
    if "```mermaid" not in fitted:
        assert "Design line 5" not in fitted  # the design note went before the graph


def test_fit_comment_cuts_the_checklist_with_a_count() -> None:
    body = render_plan("r-big", huge_plan(), limit=10**9)
    fitted = fit_comment(body, 4000)
    assert "_Graph omitted (comment size limit)._" in fitted
    match = re.search(r"^- … (\d+) more stories not shown \(comment size limit\)$", fitted, re.M)
    assert match is not None
    shown = len(re.findall(r"^- \[ \] \*\*S", fitted, re.M))
    assert shown + int(match.group(1)) == 25


def test_one_line_design_note_is_cut_not_dropped() -> None:
    plan = parse_plan(
        {
            "summary": "s",
            "design_note": "word " * 20_000,
            "stories": [story("S1", "t", [], "light")],
        }
    )
    assert isinstance(plan, Plan)
    body = render_plan("r", plan)
    assert len(body) <= COMMENT_LIMIT
    assert body.count("word") > 10_000


def test_fit_comment_leaves_short_bodies_alone() -> None:
    body = render_help()
    assert fit_comment(body) == body


def test_fit_comment_hard_cut_closes_blocks() -> None:
    body = "<!-- baro:run:x -->\n<details><summary>a</summary>\n\n```\n" + "y\n" * 5000
    fitted = fit_comment(body, 1000)
    assert len(fitted) <= 1000
    assert fitted.startswith("<!-- baro:run:x -->\n")
    assert_balanced(fitted)

"""The review phase's pure logic: findings, when to review, fix stories, the PR review."""

from __future__ import annotations

from typing import Any

from app.core.plan import Plan, PlanStats
from app.core.review import (
    MAX_FINDINGS,
    MAX_REVIEW_FIXES,
    add_review_fixes,
    changed_lines,
    parse_review,
    remaining_findings,
    render_review,
    review_pending,
)
from app.core.routing import RepoConfig
from app.core.run import Finding, ReviewRound, Run, StoryRecord


def story(sid: str, deps: list[str]) -> dict[str, Any]:
    return {
        "id": sid,
        "title": f"story {sid}",
        "description": "d",
        "depends_on": deps,
        "writes": [f"{sid}.py"],
        "acceptance": [f"{sid} works"],
        "tier": "light",
    }


PLAN = Plan.model_validate(
    {"summary": "s", "design_note": "d", "stories": [story("S1", []), story("S2", [])]}
)

DIFF = """diff --git a/README.md b/README.md
index 1111111..2222222 100644
--- a/README.md
+++ b/README.md
@@ -1,3 +1,5 @@
 # Title
+| a | 1 |
+| a | 1 |
 text
-old
+new
@@ -10,2 +12,3 @@ tail
 ten
+eleven
diff --git a/gone.py b/gone.py
--- a/gone.py
+++ /dev/null
@@ -1 +0,0 @@
-x = 1
"""


def run(**states: str) -> Run:
    records = {s.id: StoryRecord(state=states.get(s.id, "landed")) for s in PLAN.stories}  # type: ignore[arg-type]
    return Run(
        id="r1",
        delivery_id="d",
        installation_id=1,
        owner="o",
        repo="r",
        issue_number=1,
        issue_title="t",
        requester="alice",
        trigger="label",
        state="finalizing",
        plan=PLAN,
        stories=records,
    )


def finding(severity: str = "blocking", file: str = "README.md", line: int | None = 3) -> Finding:
    return Finding(severity=severity, file=file, line=line, problem="row twice", story="S2")  # type: ignore[arg-type]


def test_changed_lines_are_the_new_side_of_each_hunk() -> None:
    lines = changed_lines(DIFF)
    assert lines == {"README.md": {1, 2, 3, 4, 5, 12, 13}}


def test_a_valid_review_parses_and_knows_which_lines_take_inline_comments() -> None:
    args = {
        "summary": "One duplicate.",
        "findings": [
            {"severity": "blocking", "file": "./README.md", "line": 3, "problem": "twice"},
            {
                "severity": "note",
                "file": "src/x.py",
                "line": None,
                "problem": "naming",
                "story": "S1",
            },
            {"severity": "warning", "file": "README.md", "line": 40, "problem": "far"},
        ],
    }
    parsed = parse_review(args, PLAN, changed_lines(DIFF))
    assert isinstance(parsed, tuple)
    summary, findings = parsed
    assert summary == "One duplicate."
    assert [(f.file, f.line, f.inline) for f in findings] == [
        ("README.md", 3, True),
        ("src/x.py", None, False),
        ("README.md", 40, False),
    ]


def test_a_malformed_review_names_every_problem() -> None:
    args: dict[str, Any] = {
        "summary": 3,
        "findings": [
            "text",
            {"severity": "fatal", "file": "a", "problem": "p"},
            {"severity": "note", "file": "/etc/passwd", "problem": "p"},
            {"severity": "note", "file": "a", "line": 0, "problem": "p"},
            {"severity": "note", "file": "a", "line": True, "problem": "p"},
            {"severity": "note", "file": "a", "problem": " "},
            {"severity": "note", "file": "a", "problem": "p", "story": "S9"},
        ],
    }
    problems = parse_review(args, PLAN, {})
    assert isinstance(problems, list)
    joined = "\n".join(problems)
    for text in (
        "summary: must be a string",
        "findings[0]: must be an object",
        "findings[1].severity",
        "findings[2].file",
        "findings[3].line",
        "findings[4].line",
        "findings[5].problem",
        "findings[6].story: one of S1, S2 or null",
    ):
        assert text in joined, text
    assert parse_review({"summary": "s", "findings": "none"}, PLAN, {}) == [
        "findings: must be a list (empty when nothing is wrong)"
    ]
    many = [{"severity": "note", "file": "a", "problem": "p"}] * (MAX_FINDINGS + 1)
    assert "at most" in "".join(parse_review({"summary": "s", "findings": many}, PLAN, {}))


def test_when_a_run_is_reviewed() -> None:
    assert review_pending(run())
    assert not review_pending(run(S1="failed", S2="failed"))  # nothing landed
    off = run().model_copy(update={"repo_config": RepoConfig(review=False)})
    assert not review_pending(off)
    once = add_review_fixes(run(), ReviewRound(round=1, findings=[finding("warning")]))
    assert not review_pending(once)  # no fixes: no second round
    fixing = add_review_fixes(run(), ReviewRound(round=1, findings=[finding()]))
    assert fixing.state == "running" and not review_pending(fixing)  # its fix is pending
    fix = fixing.reviews[-1].fixes[0]
    landed = fixing.model_copy(
        update={
            "state": "finalizing",
            "stories": {**fixing.stories, fix: StoryRecord(state="landed")},
        }
    )
    assert review_pending(landed)


def test_blocking_findings_become_bounded_fix_stories_grouped_by_file() -> None:
    files = ["a.py", "a.py", "b.py", "c.py", "d.py"]
    round_ = ReviewRound(round=1, findings=[finding(file=f) for f in files] + [finding("note")])
    after = add_review_fixes(run(), round_)
    fixes = after.reviews[-1].fixes
    assert fixes == ["S3", "S4", "S5"] and len(fixes) == MAX_REVIEW_FIXES
    assert after.state == "running" and after.verification == []
    stories = {s.id: s for s in after.plan.stories} if after.plan else {}
    assert stories["S3"].writes == ["a.py"]
    assert stories["S5"].writes == ["c.py", "d.py"]  # the rest share the last fix story
    assert stories["S3"].depends_on == ["S1", "S2"]
    assert "row twice" in stories["S3"].description
    assert all(after.stories[sid].state == "pending" for sid in fixes)


def test_the_last_round_records_findings_without_fixes() -> None:
    first = add_review_fixes(run(), ReviewRound(round=1, findings=[finding()]))
    second = first.model_copy(update={"state": "finalizing"})
    after = add_review_fixes(second, ReviewRound(round=2, findings=[finding()]))
    assert after.state == "finalizing" and after.reviews[-1].fixes == []
    assert len(remaining_findings(after)) == 1


def test_the_pr_review_puts_findings_on_their_lines_and_lists_the_rest() -> None:
    done = add_review_fixes(run(), ReviewRound(round=1, findings=[]))
    assert render_review(done) == ("✅ baro's review found nothing left to change.", [])
    inline = finding("warning").model_copy(update={"inline": True})
    loose = finding("note", "src/<x>.py", None)
    reviewed = add_review_fixes(run(), ReviewRound(round=1, findings=[inline, loose]))
    body, comments = render_review(reviewed)
    assert body.startswith("baro's review: 1 warning, 1 note.")
    assert "src/&lt;x&gt;.py" in body or "src/\\<x\\>.py" in body  # escaped, not HTML
    assert comments == [("README.md", 3, "**warning**: row twice (story S2)")]
    failed = run().model_copy(
        update={"reviews": [ReviewRound(round=1, error="model down", stats=PlanStats())]}
    )
    assert render_review(failed) == ("", [])

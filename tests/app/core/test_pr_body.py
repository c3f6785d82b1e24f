"""Pull request body, title and final tracking comment: snapshots, size limit, numbers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.core.final_comment import render_final_comment
from app.core.markdown import COMMENT_LIMIT
from app.core.plan import Plan, PlanStats, parse_plan
from app.core.pr_body import PR_TITLE_LIMIT, render_pr_body, render_pr_title
from app.core.report import find_run_id
from app.core.run import Run, StoryRecord, VerifyResult
from app.core.run_facts import is_checkpoint
from tests.snapshots import snapshots

assert_snapshot = snapshots(Path(__file__).parent / "snapshots")
REPO_URL = "https://github.com/acme/stats"
T0 = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


_FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")


def outside_fences(body: str) -> list[str]:
    """The lines that are not inside a fenced code block (fence length respected)."""
    out: list[str] = []
    fence: str | None = None
    for line in body.split("\n"):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                continue
            out.append(line)
        elif (
            match
            and match.group(1)[0] == fence[0]
            and len(match.group(1)) >= len(fence)
            and not match.group(2).strip()
        ):
            fence = None
    assert fence is None, "an open fence"
    return out


def assert_balanced(body: str) -> None:
    """Every fence and <details> opened outside code is closed again."""
    depth = 0
    for line in outside_fences(body):
        depth += line.count("<details") - line.count("</details>")
        assert depth >= 0
    assert depth == 0, "an open <details>"


def gantt_block(body: str) -> str:
    match = re.search(r"```mermaid\ngantt\n(.*?)\n```", body, re.DOTALL)
    assert match, "no gantt"
    return match.group(1)


def story(sid: str, title: str, deps: list[str], tier: str) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title,
        "description": f"Implement {title}.",
        "depends_on": deps,
        "writes": [f"stats/{sid.lower()}.py"],
        "acceptance": ["it works"],
        "tier": tier,
    }


def six_story_plan() -> Plan:
    plan = parse_plan(
        {
            "summary": "Add a `stats` package with mean and median, a CLI on top, docs and "
            "tests. Ask @alice about <b>edge cases</b>.",
            "design_note": "## Layout\n\n- `stats/core.py`: `mean`, `median`\n"
            "- `stats/cli.py`: `python -m stats mean 1 2 3`\n\n"
            "```python\ndef mean(xs: list[float]) -> float: ...\n```\n\n"
            "</details> cannot escape, and @bob is not pinged.",
            "stories": [
                story("S1", "Package skeleton", [], "light"),
                story("S2", "mean() with empty-input error", ["S1"], "standard"),
                story("S3", "median() | even & odd lengths", ["S1"], "standard"),
                story("S4", "CLI: `python -m stats <op> [numbers]`", ["S2", "S3"], "heavy"),
                story("S5", "README usage for @alice", ["S4"], "light"),
                story("S6", "Property tests *hypothesis*", ["S2", "S3"], "standard"),
            ],
        }
    )
    assert isinstance(plan, Plan), plan
    return plan


def record(
    state: str,
    start: float | None,
    end: float | None,
    *,
    model: str | None = "deepseek-flash",
    tier: str = "standard",
    sha: str | None = None,
    cost: float | None = 0.0021,
    tokens: tuple[int, int, int] = (12_000, 8_000, 1_500),
    **extra: Any,
) -> StoryRecord:
    ran = start is not None
    return StoryRecord(
        state=state,  # type: ignore[arg-type]
        attempts=1 if ran else 0,
        model=model if ran else None,
        tier=tier,
        sha=sha,
        started_at=T0 + timedelta(seconds=start) if start is not None else None,
        finished_at=T0 + timedelta(seconds=end) if end is not None else None,
        input_tokens=tokens[0] if ran else 0,
        cache_read_tokens=tokens[1] if ran else 0,
        output_tokens=tokens[2] if ran else 0,
        cost_usd=cost if ran else 0.0,
        **extra,
    )


def base_run(**extra: Any) -> Run:
    fields: dict[str, Any] = {
        "id": "r42abc",
        "delivery_id": "d-1",
        "installation_id": 1,
        "owner": "acme",
        "repo": "stats",
        "issue_number": 42,
        "issue_title": "Statistics module: mean, median and a CLI",
        "requester": "alice",
        "trigger": "label",
        "plan": six_story_plan(),
        "plan_stats": PlanStats(
            model="planner-pro",
            input_tokens=40_000,
            output_tokens=3_000,
            cost_usd=0.12,
            duration_s=45,
        ),
        "branch": "baro/issue-42-statistics-module-mean-median-and-a-cli",
        "base_sha": "0123456789abcdef0123456789abcdef01234567",
        "default_branch": "main",
        "started_at": T0,
    }
    fields.update(extra)
    return Run(**fields)


def green_run() -> Run:
    stories = {
        "S1": record("landed", 0, 40, tier="light", sha="a" * 40),
        "S2": record("landed", 41, 160, sha="b1" * 20),
        "S3": record("landed", 41, 130, sha="c2" * 20),
        "S4": record("landed", 161, 300, tier="heavy", sha="d3" * 20, model="deepseek-pro"),
        "S5": record("landed", 301, 340, tier="light", sha="e4" * 20),
        "S6": record("landed", 161, 250, sha="f5" * 20),
    }
    for sid, rec in stories.items():
        rec.summary = f"Implemented {sid} as planned; see `stats/{sid.lower()}.py`."
    return base_run(
        state="done",
        stories=stories,
        finished_at=T0 + timedelta(seconds=360),
        verification=[
            VerifyResult(command="pytest -q", exit_code=0, passed=True, duration_s=12.4),
            VerifyResult(command="ruff check .", exit_code=0, passed=True, duration_s=1.2),
        ],
    )


EVIDENCE = (
    "$ pytest tests/test_cli.py -q\n"
    "```\nF.\n```\n"
    "E   AssertionError: expected 2.0 for @alice\n"
    "</details><script>alert(1)</script>\n"
    "1 failed, 1 passed in 0.12s"
)


def checkpoint_run() -> Run:
    stories = {
        "S1": record("landed", 0, 40, tier="light", sha="a" * 40),
        "S2": record("landed", 41, 160, sha="b1" * 20),
        "S3": record("landed", 41, 130, sha="c2" * 20, model="mystery-model", cost=None),
        "S4": record(
            "failed",
            161,
            420,
            tier="heavy",
            model="deepseek-pro",
            failure_kind="verification",
            failure="tests failed: `test_cli_mean` expected 2.0 <got 2>",
            evidence=[EVIDENCE, "git diff --stat\n stats/cli.py | 40 ++++"],
        ),
        "S5": record("blocked", None, None, tier="light", failure="waits on S4"),
        "S6": record("landed", 161, 250, sha="f5" * 20),
    }
    stories["S4"].attempts = 2
    return base_run(
        state="checkpoint",
        stories=stories,
        finished_at=T0 + timedelta(seconds=430),
        verification=[
            VerifyResult(command="pytest -q", exit_code=0, passed=True, duration_s=12.4),
            VerifyResult(
                command="ruff check . | tee out.txt",
                exit_code=1,
                passed=False,
                output_tail="stats/cli.py:3:1: F401 `sys` imported but unused\n```\nFound 1 error.",
                duration_s=1.2,
            ),
        ],
    )


# --- snapshots ----------------------------------------------------------------------------


def test_green_pr_body_snapshot() -> None:
    run = green_run()
    body = render_pr_body(run, repo_html_url=REPO_URL)
    assert_snapshot("pr_body_green.md", body)
    assert_balanced(body)
    assert body.startswith("Closes #42\n")
    assert "[!WARNING]" not in body
    assert render_pr_title(run) == "Statistics module: mean, median and a CLI (#42)"


def test_checkpoint_pr_body_snapshot() -> None:
    run = checkpoint_run()
    body = render_pr_body(run, repo_html_url=REPO_URL)
    assert_snapshot("pr_body_checkpoint.md", body)
    assert_balanced(body)
    assert body.startswith("Refs #42\n")
    assert "> [!WARNING]" in body
    assert "`/baro retry`" in body
    assert render_pr_title(run) == "[checkpoint] Statistics module: mean, median and a CLI (#42)"


def test_final_comment_snapshots() -> None:
    green = green_run()
    assert_snapshot("final_done.md", render_final_comment(green, pr_url=f"{REPO_URL}/pull/43"))
    assert_snapshot(
        "final_checkpoint.md",
        render_final_comment(checkpoint_run(), pr_url=f"{REPO_URL}/pull/43"),
    )
    failed = checkpoint_run()
    for sid in ("S2", "S3", "S4", "S5", "S6"):
        failed.stories[sid] = record("blocked", None, None, failure="waits on S1")
    failed.stories["S1"] = record(
        "failed", 0, 30, failure_kind="provider", failure="quota exceeded"
    )
    failed.state = "failed"
    failed.verification = []
    assert_snapshot("final_failed.md", render_final_comment(failed, pr_url=None))
    cancelled = green_run()
    cancelled.state = "cancelled"
    for sid in ("S4", "S5", "S6"):
        cancelled.stories[sid] = record("cancelled", None, None)
    assert_snapshot(
        "final_cancelled.md", render_final_comment(cancelled, pr_url=f"{REPO_URL}/pull/43")
    )


# --- behaviour ----------------------------------------------------------------------------


def test_final_comment_keeps_marker_and_explains_missing_pr() -> None:
    run = checkpoint_run()
    for sid in run.stories:
        run.stories[sid] = record("failed", 0, 10, failure="boom")
    run.state = "failed"
    body = render_final_comment(run, pr_url=None)
    assert body.split("\n", 1)[0] == "<!-- baro:run:r42abc -->"
    assert find_run_id(body) == "r42abc"
    assert body.split("\n")[1].startswith("### ❌ Failed — 0/6")
    assert "No pull request" in body and "`/baro retry`" in body
    done = render_final_comment(green_run(), pr_url=f"{REPO_URL}/pull/43")
    assert done.split("\n")[1].startswith("### ✅ Done — 6/6")
    refused = green_run().model_copy(
        update={"state": "failed", "failure": "GitHub answered 422 <b>Validation</b> Failed"}
    )
    unopened = render_final_comment(refused, pr_url=None)
    assert "**No pull request yet:** the 6 stories that landed are on the branch" in unopened
    assert f"<code>{refused.branch}</code>" in unopened
    assert r"(GitHub answered 422 \<b\>Validation\</b\> Failed)" in unopened
    assert "comment `/baro retry` to try again" in unopened
    follow_up = run.model_copy(update={"pr_branch": "baro/issue-42-x", "issue_number": 43})
    nothing_added = render_final_comment(follow_up, pr_url=None)
    assert "**Nothing added:** no story of this follow-up landed" in nothing_added
    assert "No pull request" not in nothing_added
    assert f"{REPO_URL}/pull/43" in done
    assert done.count("- [x] **S") == 6


def test_closes_only_when_everything_landed() -> None:
    red = green_run()
    red.verification[1] = VerifyResult(
        command="ruff check .", exit_code=1, passed=False, output_tail="E501"
    )
    body = render_pr_body(red, repo_html_url=REPO_URL)
    assert body.startswith("Closes #42\n")  # all work is there; the checks are red
    assert "[!WARNING]" in body and "verification is red" in body
    assert render_pr_title(red).startswith("[checkpoint] ")
    assert is_checkpoint(red)

    partial = checkpoint_run()
    assert render_pr_body(partial, repo_html_url=REPO_URL).startswith("Refs #42\n")
    assert "Closes" not in render_pr_body(partial, repo_html_url=REPO_URL)


def test_unknown_cost_never_renders_as_zero() -> None:
    run = checkpoint_run()
    body = render_pr_body(run, repo_html_url=REPO_URL)
    s3_row = next(line for line in body.split("\n") if line.startswith("| ✅ | **S3**"))
    assert "unknown" in s3_row and "$" not in s3_row
    assert re.search(r"\$0\.00(?!\d)", body) is None
    assert "≥ $" in body and "(some prices unknown)" in body
    model_row = next(line for line in body.split("\n") if line.startswith("| mystery-model"))
    assert model_row.endswith("| unknown |")

    everything_unknown = checkpoint_run()
    everything_unknown.plan_stats = PlanStats(model="planner-pro", input_tokens=10)
    for rec in everything_unknown.stories.values():
        if rec.started_at is not None:
            rec.cost_usd = None
    body = render_pr_body(everything_unknown, repo_html_url=REPO_URL)
    total = next(line for line in body.split("\n") if line.startswith("| **total**"))
    assert "**unknown**" in total and "$" not in total
    final = render_final_comment(everything_unknown, pr_url=None)
    assert "$0" not in final and "unknown" in final


def test_gantt_contains_only_stories_that_ran() -> None:
    gantt = gantt_block(render_pr_body(checkpoint_run(), repo_html_url=REPO_URL))
    tasks = [line.strip() for line in gantt.split("\n") if " :" in line]
    assert [t.split(" ")[0] for t in tasks] == ["S1", "S2", "S3", "S4", "S6"]
    assert "S5" not in gantt
    s4 = next(t for t in tasks if t.startswith("S4"))
    start = int((T0 + timedelta(seconds=161)).timestamp())
    assert s4.endswith(f":crit, s4a1, {start}, {start + 259}")
    assert "dateFormat X" in gantt
    assert "section Level 1" in gantt and "section Level 4" not in gantt  # S5 is level 4
    # A colon in a title would end the task name early.
    assert all(t.count(" :") == 1 and t.split(" :")[0].count(":") == 0 for t in tasks)


def test_speedup_of_two_parallel_stories() -> None:
    plan = parse_plan(
        {
            "summary": "Two independent stories.",
            "design_note": "None.",
            "stories": [story("S1", "One", [], "light"), story("S2", "Two", [], "heavy")],
        }
    )
    assert isinstance(plan, Plan)
    run = base_run(
        plan=plan,
        stories={
            "S1": record("landed", 0, 60, sha="a" * 40),
            "S2": record("landed", 0, 60, sha="b" * 40),
        },
        finished_at=T0 + timedelta(seconds=60),
    )
    body = render_pr_body(run, repo_html_url=REPO_URL)
    assert "wall 1m00s · sequential 2m00s · speedup 2.0× · critical path S1 (bound 1m00s)" in body


def test_critical_path_uses_measured_durations() -> None:
    body = render_pr_body(green_run(), repo_html_url=REPO_URL)
    # S2 (119 s) outweighs S3 (89 s); S4 → S5 (139 + 39) outweighs S6 (89).
    assert "critical path S1 → S2 → S4 → S5 (bound 5m37s)" in body
    assert "wall 6m00s · sequential 8m35s · speedup 1.4×" in body
    partial = render_pr_body(checkpoint_run(), repo_html_url=REPO_URL)
    assert "critical path S1 → S2 → S4 → S5 (bound ≥ 6m58s, by tier" in partial


def test_verification_section() -> None:
    none = green_run()
    none.verification = []
    assert "No verification commands configured." in render_pr_body(none, repo_html_url=REPO_URL)
    body = render_pr_body(checkpoint_run(), repo_html_url=REPO_URL)
    assert "| ✅ | <code>pytest -q</code> | 0 | 12s |" in body
    assert "| ❌ | <code>ruff check . \\| tee out.txt</code> | 1 | 1s |" in body
    assert "F401" in body


def test_untrusted_text_is_contained() -> None:
    body = render_pr_body(checkpoint_run(), repo_html_url=REPO_URL)
    prose = "\n".join(outside_fences(body))
    assert re.search(r"(?<![\w`/])@(alice|bob)\b", prose) is None  # defanged outside code
    assert "<script>" not in prose  # only inside the evidence fence
    assert "&lt;/details> cannot escape" in prose  # the design note cannot close its block
    assert "````text" in body  # evidence with ``` inside gets a longer fence
    assert_balanced(body)


def test_title_is_bounded_and_falls_back_to_the_plan() -> None:
    run = checkpoint_run()
    run.issue_title = "Make it faster " * 30
    title = render_pr_title(run)
    assert len(title) <= PR_TITLE_LIMIT
    assert title.startswith("[checkpoint] Make it faster") and title.endswith("… (#42)")
    run = green_run()
    run.issue_title = "  "
    assert (
        render_pr_title(run)
        == "Add a `stats` package with mean and median, a CLI on top, docs and tests (#42)"
    )


def big_run(n: int = 25, title_len: int = 500, evidence_kb: int = 10, note: int = 40) -> Run:
    stories = [
        story(
            f"S{i}",
            (f"Story {i} " + "very long title with <html> & `code` " * 20)[:title_len],
            [f"S{i - 1}"] if i % 5 != 1 else [],
            "standard",
        )
        for i in range(1, n + 1)
    ]
    plan = parse_plan(
        {
            "summary": "A huge plan. " * 200,
            "design_note": ("## Section\n\n" + "Design detail line that is long. " * 30 + "\n\n")
            * note,
            "stories": stories,
        }
    )
    assert isinstance(plan, Plan), plan
    evidence = ("```\n" + "E   assert something failed here at line 42 of a long file\n" * 200)[
        : evidence_kb * 1024
    ]
    records = {
        s["id"]: record(
            "failed",
            i * 10,
            i * 10 + 300,
            failure_kind="execution",
            failure="agent gave up: " + "x" * 600,
            evidence=[evidence],
        )
        for i, s in enumerate(stories)
    }
    return base_run(
        plan=plan,
        issue_title="Huge " * 100,
        stories=records,
        finished_at=T0 + timedelta(seconds=600),
        verification=[
            VerifyResult(command="pytest", exit_code=1, passed=False, output_tail="F" * 20_000)
        ],
    )


def test_huge_run_fits_the_limit() -> None:
    run = big_run()
    body = render_pr_body(run, repo_html_url=REPO_URL)
    assert len(body) < COMMENT_LIMIT
    assert len(body.encode("utf-16-le")) // 2 <= COMMENT_LIMIT
    assert_balanced(body)
    assert body.startswith("Refs #42\n")
    for i in range(1, 26):  # the story table survives whole
        assert f"| ❌ | **S{i}** " in body
    assert "_… truncated" not in body  # fitted by ordered trimming, not by cutting the tail
    # Evidence alone could not make room for a 40 KB design note: the gantt went, the note was
    # shortened, and the room left was shared by the evidence blocks again.
    assert "```mermaid" not in body
    assert body.count("characters omitted") == 25
    assert "## Cost and tokens" in body and "## Verification" in body
    assert "r42abc" in body.split("\n---\n")[-1]  # the footer survives
    assert len(render_pr_title(run)) <= PR_TITLE_LIMIT
    final = render_final_comment(run, pr_url=f"{REPO_URL}/pull/43")
    assert len(final) <= COMMENT_LIMIT and final.count("- [ ] **S") == 25


def test_trimming_gives_up_evidence_before_gantt_and_design_note() -> None:
    body = render_pr_body(big_run(n=12, evidence_kb=6, note=4), repo_html_url=REPO_URL)
    assert len(body) <= COMMENT_LIMIT
    assert "characters omitted" in body  # evidence was capped …
    assert "```mermaid" in body  # … but the gantt and design note stayed
    assert "Design note omitted" not in body

    tight = render_pr_body(big_run(), repo_html_url=REPO_URL, limit=20_000)
    assert len(tight) <= 20_000
    assert_balanced(tight)
    assert "_Evidence omitted (size limit)._" in tight


def test_refused_changes_are_listed_with_their_reason() -> None:
    run = green_run()
    assert "## Refused changes" not in render_pr_body(run, repo_html_url=REPO_URL)
    first = next(iter(run.stories))
    run.stories[first].refusals = [
        "vendor/.git: a nested git repository cannot be committed",
        ".github/workflows/ci.yml: no workflows permission <script>@alice</script>",
    ]
    body = render_pr_body(run, repo_html_url=REPO_URL)
    assert "## Refused changes" in body
    assert f"- **{first}** vendor/.git: a nested git repository cannot be committed" in body
    prose = "\n".join(outside_fences(body))
    assert "<script>" not in prose and re.search(r"(?<![\w`/])@alice\b", prose) is None
    assert_balanced(body)


def test_every_attempt_counts_and_gets_its_own_bar() -> None:
    """A story that failed once and landed on its retry: both attempts count in its time,
    the sequential sum and the bound, and the gantt shows each attempt."""
    from app.core.run import AttemptSpan

    plan = parse_plan(
        {
            "summary": "One story.",
            "design_note": "None.",
            "stories": [story("S1", "Retried", [], "light")],
        }
    )
    assert isinstance(plan, Plan)
    spans = [
        AttemptSpan(
            attempt=1,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=4),
            outcome="verification",
        ),
        AttemptSpan(
            attempt=2,
            started_at=T0 + timedelta(seconds=5),
            finished_at=T0 + timedelta(seconds=8),
            outcome="landed",
        ),
    ]
    rec = record("landed", 5, 8, sha="a" * 40).model_copy(update={"spans": spans, "attempts": 2})
    assert rec.duration_s == 7.0  # not the last attempt's 3 s
    run = base_run(plan=plan, stories={"S1": rec}, finished_at=T0 + timedelta(seconds=8))
    body = render_pr_body(run, repo_html_url=REPO_URL)
    assert "sequential 7s" in body and "(bound 7s)" in body
    tasks = [line.strip() for line in gantt_block(body).split("\n") if " :" in line]
    start = int(T0.timestamp())
    assert tasks == [
        f"S1 · Retried (attempt 1) :crit, s1a1, {start}, {start + 4}",
        f"S1 · Retried (attempt 2) :done, s1a2, {start + 5}, {start + 8}",
    ]

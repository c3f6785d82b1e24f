"""The pull request a run opens, and the tracking comment's final state.

Pure rendering from a `Run`: no I/O. Everything a model wrote (titles, summaries, design note,
failure reasons, evidence) is untrusted and goes through the same escaping as the tracking
comment (`app.core.report`), so it cannot break the layout, hide text or ping people. Bodies
are fitted to GitHub's 65,536-character limit by giving up detail in a fixed order: failure
evidence first, then the gantt, then the design note.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime

from app.core.dag import levels
from app.core.markdown import (
    COMMENT_LIMIT,
    clip,
    code_block,
    comment_size,
    escape_inline,
    fit_comment,
    format_cost,
    format_duration,
    keep_ends,
    mermaid_label,
    run_page_line,
    untrusted_markdown,
)
from app.core.review import remaining_findings
from app.core.run import Run, StoryRecord
from app.core.run_facts import (
    Row,
    UsageTotals,
    count_state,
    critical_chain,
    fix_story_ids,
    is_checkpoint,
    landed_everything,
    model_usage,
    phase_usage,
    rows_of,
    sequential_seconds,
    story_ran,
    total_usage,
    unix_seconds,
    wall_seconds,
)
from app.core.sanitize import sanitize

__all__ = [
    "PR_TITLE_LIMIT",
    "is_checkpoint",
    "landed_everything",
    "render_pr_body",
    "render_pr_title",
]

#: Longer titles are cut by GitHub's UI anyway; this keeps the issue reference visible.
PR_TITLE_LIMIT = 120

_STATUS = {
    "landed": "✅",
    "failed": "❌",
    "blocked": "⛔",
    "cancelled": "⏹",
    "running": "⏳",
    "pending": "⏳",
}
_SHA = re.compile(r"[0-9a-f]{7,64}")
_URL = re.compile(r"https://[^\s<>()\[\]`\"']+")

#: Most characters of evidence (or of a red check's output) shown per block.
EVIDENCE_CAP = 6000
_SUMMARY_CAP = 300
# What is given up after evidence, in order: (gantt shown, design-note chars; None = whole).
_LAYOUTS: tuple[tuple[bool, int | None], ...] = (
    (True, None),
    (False, None),
    (False, 4000),
    (False, 0),
)


# --- small pieces ---------------------------------------------------------------------------


def _plain(text: str) -> str:
    """A single line of untrusted text for a place that is not Markdown (a PR title)."""
    return " ".join(sanitize(text).split())


def _commit(sha: str | None, repo_html_url: str) -> str:
    if not sha:
        return "–"
    if not _SHA.fullmatch(sha):
        return escape_inline(sha, 12)
    return f"[{sha[:7]}]({repo_html_url.rstrip('/')}/commit/{sha})"


def _head_tail(text: str, cap: int) -> str:
    """The error and the summary of long evidence."""
    return keep_ends(text, cap, lambda omitted: f"… {omitted:,} characters omitted …")


def _summary_tag(text: str) -> str:
    """`<summary>` holds raw HTML (no Markdown), so only our own short text goes in it."""
    return f"<details><summary>{html.escape(text, quote=False)}</summary>"


def _block(summary: str, body: Sequence[str]) -> list[str]:
    return [_summary_tag(summary), "", *body, "", "</details>"]


def _gantt_text(text: str) -> str:
    """A gantt task name: `:` would end it, so it is escaped like the rest of the label."""
    return mermaid_label(text, 40).replace(":", "#58;")


# --- the title ------------------------------------------------------------------------------


def render_pr_title(run: Run) -> str:
    """`Statistics module: mean, median and a CLI (#42)`, `[checkpoint] …` when partial.

    The issue title is the maintainer's own words, so it wins over the plan summary; the
    summary's first sentence is used only when the issue has no title.
    """
    text = _plain(run.issue_title)
    if not text and run.plan is not None:
        text = re.split(r"(?<=[.!?])\s", _plain(run.plan.summary), maxsplit=1)[0].rstrip(".")
    text = text or "baro run"
    prefix = "[checkpoint] " if is_checkpoint(run) else ""
    suffix = f" (#{run.issue_number})"
    return prefix + clip(text, PR_TITLE_LIMIT - len(prefix) - len(suffix)) + suffix


# --- the body -------------------------------------------------------------------------------


def _closing_line(run: Run) -> str:
    """`Closes #N` when every story landed, else `Refs #N`.

    A checkpoint that did not land everything must not close the issue when someone merges
    it: the remaining stories are still to do. Red verification alone still says `Closes`,
    because all planned work is in the PR and a reviewer fixes the checks before merging.
    """
    word = "Closes" if landed_everything(run) else "Refs"
    return f"{word} #{run.issue_number}"


def _blocked_by(run: Run, rows: Sequence[Row]) -> dict[str, list[str]]:
    """blocked story → the failed/cancelled stories it (transitively) waits on."""
    if run.plan is None:
        return {}
    state = {r.id: r.record.state for r in rows}
    rank = {r.id: i for i, r in enumerate(rows)}
    out: dict[str, list[str]] = {}
    for row in rows:
        if row.record.state != "blocked" or row.story is None:
            continue
        causes: list[str] = []
        stack = list(row.story.depends_on)
        seen: set[str] = set()
        while stack:
            sid = stack.pop(0)
            if sid in seen:
                continue
            seen.add(sid)
            if state.get(sid) in ("failed", "cancelled"):
                causes.append(sid)
            elif sid in run.plan.ids:
                stack.extend(run.plan.story(sid).depends_on)
        out[row.id] = sorted(causes, key=rank.__getitem__)
    return out


def _banner(run: Run, rows: Sequence[Row]) -> list[str]:
    """A GitHub WARNING alert: what did not work, and the command that continues the run."""
    landed = count_state(rows, "landed")
    red = [v for v in run.verification if not v.passed]
    head = f"**Checkpoint — {landed} of {len(rows)} stories landed"
    head += "; verification is red.**" if red else ".**"
    if landed_everything(run):
        head += " Every story landed, but the checks below failed."
    else:
        head += (
            f" This pull request holds only the work that landed; merging it does not close "
            f"#{run.issue_number}."
        )
    lines = ["> [!WARNING]", f"> {head}"]
    for row in rows:
        rec = row.record
        if rec.state == "failed":
            kind = f" ({rec.failure_kind})" if rec.failure_kind else ""
            reason = escape_inline(rec.failure or "no reason recorded", 200)
            lines.append(f"> - ❌ **{row.id}** failed{kind}: {reason}")
        elif rec.state == "cancelled":
            lines.append(f"> - ⏹ **{row.id}** was cancelled")
        elif rec.state in ("running", "pending"):
            lines.append(f"> - ⏳ **{row.id}** did not finish")
    blocked = _blocked_by(run, rows)
    for sid, causes in blocked.items():
        why = f" by {', '.join(causes)}" if causes else ""
        lines.append(f"> - ⛔ **{sid}** blocked{why}")
    for v in red:
        exit_text = f"exited {v.exit_code}" if v.exit_code is not None else "did not finish"
        lines.append(
            f"> - ❌ verification <code>{escape_inline(v.command, 120)}</code> {exit_text}"
        )
    lines.append(">")
    if not landed_everything(run):
        lines.append(
            f"> **To continue:** comment `/baro retry` on #{run.issue_number} to retry the "
            "stories that did not land on this branch (`/baro retry S3` for one)."
        )
    else:
        lines.append(
            "> **To continue:** fix the failing checks on this branch by hand, or describe the "
            f"fix in a new issue and label it; `/baro retry` on #{run.issue_number} retries "
            "stories only."
        )
    return lines


def _story_table(rows: Sequence[Row], repo_html_url: str) -> list[str]:
    lines = [
        "| | Story | Tier → model | Attempts | Time | Tokens in / out | Cost | Commit |",
        "| :-: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        rec = row.record
        ran = story_ran(rec)
        tier = escape_inline(row.tier or "–", 20)
        model = f"{tier} → {escape_inline(rec.model, 40)}" if rec.model else tier
        duration = format_duration(rec.duration_s) if rec.duration_s is not None else "–"
        tokens = f"{rec.input_tokens:,} / {rec.output_tokens:,}" if ran else "–"
        cost = format_cost(rec.cost_usd) if ran else "–"
        lines.append(
            f"| {_STATUS[rec.state]} | **{row.id}** {escape_inline(row.title, 80)} | {model} "
            f"| {rec.attempts or '–'} | {duration} | {tokens} | {cost} "
            f"| {_commit(rec.sha, repo_html_url)} |"
        )
    return lines


def _story_summaries(rows: Sequence[Row], max_len: int) -> list[str]:
    if max_len <= 0:
        return []
    items = [
        f"- **{r.id}** {escape_inline(r.record.summary, max_len)}"
        for r in rows
        if r.record.summary and r.record.state == "landed"
    ]
    if not items:
        return []
    return ["", *_block("What each story did", items)]


def _failures(rows: Sequence[Row], cap: int) -> list[str]:
    out: list[str] = []
    for row in rows:
        rec = row.record
        if rec.state != "failed":
            continue
        kind = rec.failure_kind or "unknown"
        facts = [f"kind: **{kind}**", f"attempts: {rec.attempts}"]
        if rec.model:
            facts.append(f"last model: {escape_inline(rec.model, 40)}")
        body = [
            f"**{row.id}** {escape_inline(row.title, 200)}",
            "",
            " · ".join(facts),
            "",
            f"**Reason:** {escape_inline(rec.failure or 'no reason recorded', 500)}",
        ]
        evidence = "\n\n".join(e.strip("\n") for e in rec.evidence if e.strip())
        if not evidence and rec.verify_output:
            evidence = rec.verify_output
        if evidence.strip():
            body.append("")
            if cap > 0:
                body.append(code_block(_head_tail(evidence, cap)))
            else:
                body.append("_Evidence omitted (size limit)._")
        out += ["", *_block(f"❌ {row.id} failed ({kind})", body)]
    return ["", "## Failures", *out] if out else []


REFUSALS_SHOWN = 30


def _refusals(rows: Sequence[Row]) -> list[str]:
    """What baro would not commit (and why): what the agents were told to undo is part of
    the record a reviewer reads, not only of a Redis transcript."""
    items = [
        f"- **{row.id}** {escape_inline(line, 300)}" for row in rows for line in row.record.refusals
    ]
    if not items:
        return []
    shown = items[:REFUSALS_SHOWN]
    if len(items) > len(shown):
        shown.append(f"- … and {len(items) - len(shown)} more")
    intro = (
        "baro refused to commit these changes (nothing of them was pushed); each went back "
        "to the story's agent to undo before the story could land:"
    )
    return ["", "## Refused changes", "", intro, "", *shown]


def _review(run: Run) -> list[str]:
    """What each review round found and what it led to (the findings left are in the PR
    review on this pull request)."""
    if not run.reviews:
        return []
    lines = ["", "## Review", ""]
    for review in run.reviews:
        model = escape_inline(review.stats.model, 60) if review.stats and review.stats.model else ""
        by = f" ({model})" if model else ""
        if review.error:
            lines.append(
                f"- Round {review.round}{by}: not made — {escape_inline(review.error, 300)}"
            )
            continue
        blocking = len(review.blocking)
        found = f"{len(review.findings)} finding(s), {blocking} blocking"
        if not review.findings:
            found = "nothing to change"
        then = f" → fix stories {', '.join(review.fixes)}" if review.fixes else ""
        summary = f": {escape_inline(review.summary, 300)}" if review.summary else ""
        lines.append(f"- Round {review.round}{by}: {found}{then}{summary}")
    if remaining_findings(run):
        lines += ["", "The findings left are posted as baro's review on this pull request."]
    return lines


def _gantt(run: Run, rows: Sequence[Row]) -> list[str]:
    """When each story ran, one section per DAG level; stories that never started are left out.

    `dateFormat X` (unix seconds) parses on GitHub's Mermaid and avoids time-zone text; the
    axis shows the reader's local clock.
    """
    by_id = {r.id: r for r in rows}
    sections: list[tuple[str, list[str]]] = []
    if run.plan is not None:
        sections = [(f"Level {i + 1}", ids) for i, ids in enumerate(levels(run.plan))]
    extra = [r.id for r in rows if r.story is None]
    if extra:
        sections.append(("Fixes", extra))
    ends = [r.record.finished_at for r in rows if r.record.finished_at]
    fallback_end = run.finished_at or (max(ends) if ends else None)
    body: list[str] = []
    for name, ids in sections:
        tasks: list[str] = []
        for sid in ids:
            label = _gantt_text(by_id[sid].title)
            for bar in _bars(by_id[sid].record, fallback_end):
                start, finish, state, attempt, many = bar
                end = max(unix_seconds(finish) if finish else start, start + 1)
                tag = {"landed": "done", "failed": "crit", "running": "active"}.get(state)
                task = f"{sid.lower()}a{attempt}"
                meta = ", ".join(t for t in (tag, task, str(start), str(end)) if t)
                shown = f"{label} (attempt {attempt})" if many else label
                tasks.append(f"    {sid} · {shown} :{meta}")
        if tasks:
            body += [f"    section {name}", *tasks]
    if not body:
        return []
    return [
        "",
        "## Timeline",
        "",
        "```mermaid",
        "gantt",
        "    dateFormat X",
        "    axisFormat %H:%M:%S",
        "    todayMarker off",
        *body,
        "```",
    ]


def _bars(
    rec: StoryRecord, fallback_end: datetime | None
) -> list[tuple[int, datetime | None, str, int, bool]]:
    """(start, end, state, attempt, several attempts) for each attempt of a story."""
    if rec.spans:
        many = len(rec.spans) > 1
        return [
            (
                unix_seconds(span.started_at),
                span.finished_at or fallback_end,
                "running"
                if span.finished_at is None
                else ("landed" if span.outcome == "landed" else "failed"),
                span.attempt,
                many,
            )
            for span in rec.spans
        ]
    if rec.started_at is None:
        return []
    return [(unix_seconds(rec.started_at), rec.finished_at or fallback_end, rec.state, 1, False)]


def _usage_row(name: str, stories: str, usage: UsageTotals, time: str) -> str:
    if not usage.parts:
        return f"| {name} | {stories} | – | – | – | – | {time} |"
    return (
        f"| {name} | {stories} | {usage.input:,} | {usage.cached_text()} | {usage.output:,} "
        f"| {usage.cost_text()} | {time} |"
    )


def _cost(run: Run) -> list[str]:
    phases = phase_usage(run)
    total = total_usage(run)
    planning_time = run.plan_stats.duration_s if run.plan_stats else None
    fixes = fix_story_ids(run)
    story_ids = [s for s, r in run.stories.items() if story_ran(r) and s not in fixes]
    fix_ids = [s for s, r in run.stories.items() if story_ran(r) and s in fixes]
    story_time = sum(d for s in story_ids if (d := run.stories[s].duration_s) is not None)
    fix_time = sum(d for s in fix_ids if (d := run.stories[s].duration_s) is not None)
    rounds = [r for r in run.reviews if r.stats is not None]
    review_time = sum(r.stats.duration_s or 0.0 for r in rounds if r.stats is not None)
    lines = [
        "",
        "## Cost and tokens",
        "",
        "| Phase | Stories | Input | Cached | Output | Cost | Time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        _usage_row(
            "planning",
            "–",
            phases["planning"],
            format_duration(planning_time) if planning_time is not None else "–",
        ),
        _usage_row(
            "stories",
            str(len(story_ids)),
            phases["stories"],
            format_duration(story_time) if story_ids else "–",
        ),
        *(
            [
                _usage_row(
                    "review",
                    f"{len(rounds)} round{'s' if len(rounds) != 1 else ''}",
                    phases["review"],
                    format_duration(review_time),
                )
            ]
            if rounds
            else []
        ),
        _usage_row(
            "fixes",
            str(len(fix_ids)),
            phases["fixes"],
            format_duration(fix_time) if fix_ids else "–",
        ),
        f"| **total** | {len(story_ids) + len(fix_ids)} | {total.input:,} "
        f"| {total.cached_text()} | {total.output:,} | **{total.cost_text()}** | |",
        "",
        "| Model | Used for | Input | Cached | Output | Cost |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for model, (usage, uses) in model_usage(run).items():
        used = ", ".join(uses) if len(uses) <= 8 else ", ".join(uses[:8]) + f" +{len(uses) - 8}"
        lines.append(
            f"| {escape_inline(model, 60)} | {used} | {usage.input:,} | {usage.cached_text()} "
            f"| {usage.output:,} | {usage.cost_text()} |"
        )
    lines += [
        "",
        "Input counts the whole prompt (cached reads included); an unknown price is shown as "
        "unknown, never as $0. Cached is not reported for planning and review.",
    ]
    return lines


def _timing_line(run: Run) -> str:
    """`wall 4m12s · sequential 11m40s · speedup 2.8× · critical path S2 → S4 (bound 3m55s)`."""
    wall = wall_seconds(run)
    sequential = sequential_seconds(run)
    bits = [f"wall {format_duration(wall)}", f"sequential {format_duration(sequential)}"]
    if wall and sequential is not None:
        bits.append(f"speedup {sequential / wall:.1f}×")
    path, bound, exact = critical_chain(run)
    if path:
        if bound is None:
            bound_text = "bound unknown"
        elif exact:
            bound_text = f"bound {format_duration(bound)}"
        else:
            bound_text = f"bound ≥ {format_duration(bound)}, by tier: not every story ran"
        bits.append(f"critical path {' → '.join(path)} ({bound_text})")
    return " · ".join(bits)


def _timing(run: Run) -> list[str]:
    lines = ["", "## Timing", "", _timing_line(run)]
    stats = run.plan_stats
    if stats is not None and stats.duration_s is not None:
        lines += ["", f"Planning took {format_duration(stats.duration_s)} before that."]
    lines += [
        "",
        "_Sequential is the sum of story times; the critical path is the longest dependency "
        "chain, the least wall time any amount of parallelism allows._",
    ]
    return lines


def _verification(run: Run, cap: int) -> list[str]:
    lines = ["", "## Verification", ""]
    if not run.verification:
        return [*lines, "No verification commands configured."]
    lines += ["| | Command | Exit | Time |", "| :-: | --- | ---: | ---: |"]
    for v in run.verification:
        exit_text = "–" if v.exit_code is None else str(v.exit_code)
        lines.append(
            f"| {'✅' if v.passed else '❌'} | <code>{escape_inline(v.command, 200)}</code> "
            f"| {exit_text} | {format_duration(v.duration_s)} |"
        )
    for i, v in enumerate(run.verification, 1):
        if v.passed or not v.output_tail.strip():
            continue
        body = [f"<code>{escape_inline(v.command, 200)}</code>", ""]
        if cap > 0:
            body.append(code_block(v.output_tail[-cap:]))
        else:
            body.append("_Output omitted (size limit)._")
        lines += ["", *_block(f"❌ Output of check {i} (last lines)", body)]
    return lines


def _commands(run: Run) -> list[str]:
    return [
        "",
        "## Commands",
        "",
        f"- `/baro retry` on #{run.issue_number}: retry failed or blocked stories (all of them"
        " if none are named).",
        f"- `/baro status` on #{run.issue_number}: a reply with the run's current checklist.",
        "- `/baro <instructions>` on this pull request: a follow-up run that plans just that"
        " and adds its commits to this branch.",
        f"- `/baro` on #{run.issue_number}: a new run from scratch.",
    ]


def _footer(run: Run) -> list[str]:
    bits = [f"baro run <code>{escape_inline(run.id, 130)}</code>"]
    if run.branch:
        bits.append(f"branch <code>{escape_inline(run.branch, 120)}</code>")
    if run.base_sha:
        bits.append(f"base <code>{escape_inline(run.base_sha[:7], 10)}</code>")
    bits.append(f"requested by {escape_inline('@' + run.requester, 60)}")
    return ["", "---", "", "<sub>" + " · ".join(bits) + "</sub>"]


def _evidence_blocks(run: Run) -> int:
    """How many code blocks share the evidence budget: failed stories and red checks."""
    failed = sum(
        1 for r in run.stories.values() if r.state == "failed" and (r.evidence or r.verify_output)
    )
    return failed + sum(1 for v in run.verification if not v.passed and v.output_tail.strip())


def _body(
    run: Run,
    repo_html_url: str,
    evidence: int,
    summaries: int,
    *,
    gantt: bool,
    note: int | None,
    page_url: str | None = None,
) -> str:
    rows = rows_of(run)
    lines = [_closing_line(run), *run_page_line(page_url)]
    if is_checkpoint(run):
        lines += ["", *_banner(run, rows)]
    lines += ["", "## Summary", ""]
    lines.append(untrusted_markdown(run.plan.summary, 1500) if run.plan else "_No plan._")
    if run.plan is not None:
        if note is None or note > 0:
            design = untrusted_markdown(run.plan.design_note, note)
        else:
            design = "_Design note omitted (size limit)._"
        lines += ["", *_block("Design note", [design])]
    lines += ["", "## Stories", "", *_story_table(rows, repo_html_url)]
    lines += _story_summaries(rows, summaries)
    lines += _failures(rows, evidence)
    lines += _refusals(rows)
    lines += _review(run)
    if gantt:
        lines += _gantt(run, rows)
    lines += _cost(run)
    lines += _timing(run)
    lines += _verification(run, evidence)
    lines += _commands(run)
    lines += _footer(run)
    return "\n".join(lines) + "\n"


def render_pr_body(
    run: Run, *, repo_html_url: str, limit: int = COMMENT_LIMIT, page_url: str | None = None
) -> str:
    """The one pull request of a run: what landed, what failed, timeline, cost, checks.

    Fits `limit` by giving up, in order: evidence and output tails (first shortened to share
    what room is left, then omitted, together with the per-story summaries), the gantt, then
    the design note (shortened, then omitted); `fit_comment` is the last resort.
    """
    body = ""
    for gantt, note in _LAYOUTS:
        full = _body(
            run,
            repo_html_url,
            EVIDENCE_CAP,
            _SUMMARY_CAP,
            gantt=gantt,
            note=note,
            page_url=page_url,
        )
        if comment_size(full) <= limit:
            return full
        body = _body(run, repo_html_url, 0, 0, gantt=gantt, note=note, page_url=page_url)
        spare = limit - comment_size(body)
        if spare < 0:
            continue
        blocks = _evidence_blocks(run)
        cap = min(EVIDENCE_CAP, (spare - 2000) // max(blocks, 1) - 120)
        while cap >= 200:  # share the spare room; the 2000 leaves space for summaries
            shorter = _body(
                run, repo_html_url, cap, cap // 5, gantt=gantt, note=note, page_url=page_url
            )
            if comment_size(shorter) <= limit:
                return shorter
            cap = cap * 3 // 4
        return body
    return fit_comment(body, limit)

"""The pull request a run opens, and the tracking comment's final state.

Pure rendering from a `Run`: no I/O. Everything a model wrote (titles, summaries, design note,
failure reasons, evidence) is untrusted and goes through the same escaping as the tracking
comment (`app.runs.report`), so it cannot break the layout, hide text or ping people. Bodies
are fitted to GitHub's 65,536-character limit by giving up detail in a fixed order: failure
evidence first, then the gantt, then the design note.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from app.runs.dag import TIER_WEIGHTS, critical_path, levels, topological_order
from app.runs.models import Plan, RunState, Story, StoryProgress
from app.runs.report import (
    COMMENT_LIMIT,
    _clip,
    _code_block,
    _commands_line,
    _size,
    _untrusted_markdown,
    checklist_line,
    escape_inline,
    fit_comment,
    format_cost,
    format_duration,
    marker,
    mermaid_label,
    next_commands,
)
from app.runs.run import Run, StoryRecord
from app.runs.sanitize import sanitize

__all__ = [
    "PR_TITLE_LIMIT",
    "is_checkpoint",
    "landed_everything",
    "render_final_comment",
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


# --- facts derived from a run ---------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One story as the PR shows it: plan stories in topological order, then extras."""

    id: str
    title: str
    tier: str | None
    record: StoryRecord
    story: Story | None


def _rows(run: Run) -> list[_Row]:
    rows: list[_Row] = []
    seen: set[str] = set()
    if run.plan is not None:
        for sid in topological_order(run.plan):
            story = run.plan.story(sid)
            rec = run.stories.get(sid) or StoryRecord()
            rows.append(_Row(sid, story.title, rec.tier or story.tier, rec, story))
            seen.add(sid)
    for sid, rec in run.stories.items():  # records outside the plan (fix-ups)
        if sid not in seen:
            rows.append(_Row(sid, rec.summary or sid, rec.tier, rec, None))
    return rows


def _count(rows: Iterable[_Row], state: str) -> int:
    return sum(1 for r in rows if r.record.state == state)


def landed_everything(run: Run) -> bool:
    """Every story of the plan landed (and there was a plan with at least one story)."""
    rows = _rows(run)
    return bool(rows) and all(r.record.state == "landed" for r in rows)


def _verification_red(run: Run) -> bool:
    return any(not v.passed for v in run.verification)


def is_checkpoint(run: Run) -> bool:
    """Not every story landed, or the integrated branch failed verification."""
    return not landed_everything(run) or _verification_red(run)


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def _wall_s(run: Run) -> float | None:
    """Run start → finish; the span of the stories when the run has no timestamps."""
    start, end = run.started_at, run.finished_at
    if start is None or end is None:
        starts = [r.started_at for r in run.stories.values() if r.started_at]
        ends = [r.finished_at for r in run.stories.values() if r.finished_at]
        if not starts or not ends:
            return None
        start, end = min(starts), max(ends)
    return max((end - start).total_seconds(), 0.0)


def _sequential_s(run: Run) -> float | None:
    """What the stories would have taken one after another (every attempt that ran)."""
    durations = [d for r in run.stories.values() if (d := r.duration_s) is not None]
    return sum(durations) if durations else None


def _duration_path(plan: Plan, durations: dict[str, float]) -> tuple[list[str], float]:
    """The longest chain by measured durations; ties go to the earlier story."""
    order = topological_order(plan)
    rank = {sid: i for i, sid in enumerate(order)}
    finish: dict[str, float] = {}
    parent: dict[str, str | None] = {}
    for sid in order:
        deps = plan.story(sid).depends_on
        best = min(deps, key=lambda d: (-finish[d], rank[d]), default=None)
        finish[sid] = durations[sid] + (finish[best] if best else 0.0)
        parent[sid] = best
    node: str | None = min(order, key=lambda s: (-finish[s], rank[s]))
    end = finish[node] if node else 0.0
    path: list[str] = []
    while node is not None:
        path.append(node)
        node = parent[node]
    return path[::-1], end


def _critical(run: Run) -> tuple[list[str], float | None, bool]:
    """(path, bound seconds, exact): measured when every story ran, else the tier estimate.

    Without a duration for every story, the path is the plan's tier-weighted one and the bound
    only sums the stories on it that ran, so it is a lower bound (`exact` False).
    """
    if run.plan is None or not run.plan.stories:
        return [], None, False
    durations = {
        sid: d
        for sid in run.plan.ids
        if sid in run.stories and (d := run.stories[sid].duration_s) is not None
    }
    if len(durations) == len(run.plan.ids):
        path, bound = _duration_path(run.plan, durations)
        return path, bound, True
    path, _ = critical_path(run.plan, TIER_WEIGHTS)
    known = [durations[sid] for sid in path if sid in durations]
    return path, (sum(known) if known else None), False


@dataclass
class _Usage:
    """Tokens and dollars summed over parts whose price may be unknown."""

    input: int = 0
    cached: int = 0
    output: int = 0
    cost: float = 0.0
    priced: int = 0
    unpriced: int = 0
    cached_reported: bool = False

    def add(self, inp: int, cached: int | None, out: int, cost: float | None) -> None:
        self.input += inp
        self.output += out
        if cached is not None:
            self.cached += cached
            self.cached_reported = True
        if cost is None:
            self.unpriced += 1
        else:
            self.cost += cost
            self.priced += 1

    def merge(self, other: _Usage) -> None:
        self.input += other.input
        self.cached += other.cached
        self.output += other.output
        self.cost += other.cost
        self.priced += other.priced
        self.unpriced += other.unpriced
        self.cached_reported = self.cached_reported or other.cached_reported

    @property
    def parts(self) -> int:
        return self.priced + self.unpriced

    @property
    def tokens(self) -> int:
        return self.input + self.output

    def cached_text(self) -> str:
        return f"{self.cached:,}" if self.cached_reported else "–"

    def cost_text(self) -> str:
        """Known sum, "unknown", or a lower bound: an unknown price never becomes $0."""
        if not self.parts:
            return "–"
        if not self.unpriced:
            return format_cost(self.cost)
        if self.priced:
            return f"≥ {format_cost(self.cost)} (some prices unknown)"
        return "unknown"


def _ran(rec: StoryRecord) -> bool:
    return bool(rec.model or rec.input_tokens or rec.output_tokens or rec.cost_usd is None)


def _phases(run: Run) -> dict[str, _Usage]:
    """planning / stories / fixes (records whose id starts with "F")."""
    out = {"planning": _Usage(), "stories": _Usage(), "fixes": _Usage()}
    stats = run.plan_stats
    if stats is not None:
        out["planning"].add(stats.input_tokens, None, stats.output_tokens, stats.cost_usd)
    else:
        out["planning"].add(0, None, 0, None)
    for sid, rec in run.stories.items():
        if _ran(rec):
            phase = "fixes" if sid.startswith("F") else "stories"
            out[phase].add(rec.input_tokens, rec.cache_read_tokens, rec.output_tokens, rec.cost_usd)
    return out


def _total(run: Run) -> _Usage:
    total = _Usage()
    for usage in _phases(run).values():
        total.merge(usage)
    return total


def _models(run: Run) -> dict[str, tuple[_Usage, list[str]]]:
    """model → (usage, what it was used for), in first-use order."""
    out: dict[str, tuple[_Usage, list[str]]] = {}

    def slot(model: str | None) -> tuple[_Usage, list[str]]:
        return out.setdefault(model or "unknown model", (_Usage(), []))

    stats = run.plan_stats
    if stats is not None:
        usage, uses = slot(stats.model)
        usage.add(stats.input_tokens, None, stats.output_tokens, stats.cost_usd)
        uses.append("planning")
    for row in _rows(run):
        rec = row.record
        if _ran(rec):
            usage, uses = slot(rec.model)
            usage.add(rec.input_tokens, rec.cache_read_tokens, rec.output_tokens, rec.cost_usd)
            uses.append(row.id)
    return out


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
    """Keep the first third and the last two thirds of `cap`: the error and the summary."""
    if len(text) <= cap:
        return text
    head = cap // 3
    tail = cap - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n… {omitted:,} characters omitted …\n{text[-tail:]}"


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
    return prefix + _clip(text, PR_TITLE_LIMIT - len(prefix) - len(suffix)) + suffix


# --- the body -------------------------------------------------------------------------------


def _closing_line(run: Run) -> str:
    """`Closes #N` when every story landed, else `Refs #N`.

    A checkpoint that did not land everything must not close the issue when someone merges
    it: the remaining stories are still to do. Red verification alone still says `Closes`,
    because all planned work is in the PR and a reviewer fixes the checks before merging.
    """
    word = "Closes" if landed_everything(run) else "Refs"
    return f"{word} #{run.issue_number}"


def _blocked_by(run: Run, rows: Sequence[_Row]) -> dict[str, list[str]]:
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


def _banner(run: Run, rows: Sequence[_Row]) -> list[str]:
    """A GitHub WARNING alert: what did not work, and the command that continues the run."""
    landed = _count(rows, "landed")
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


def _story_table(rows: Sequence[_Row], repo_html_url: str) -> list[str]:
    lines = [
        "| | Story | Tier → model | Attempts | Time | Tokens in / out | Cost | Commit |",
        "| :-: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        rec = row.record
        ran = _ran(rec)
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


def _story_summaries(rows: Sequence[_Row], max_len: int) -> list[str]:
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


def _failures(rows: Sequence[_Row], cap: int) -> list[str]:
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
                body.append(_code_block(_head_tail(evidence, cap)))
            else:
                body.append("_Evidence omitted (size limit)._")
        out += ["", *_block(f"❌ {row.id} failed ({kind})", body)]
    return ["", "## Failures", *out] if out else []


REFUSALS_SHOWN = 30


def _refusals(rows: Sequence[_Row]) -> list[str]:
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


def _gantt(run: Run, rows: Sequence[_Row]) -> list[str]:
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
            rec = by_id[sid].record
            if rec.started_at is None:
                continue
            start = _ts(rec.started_at)
            finish = rec.finished_at or fallback_end
            end = max(_ts(finish) if finish else start, start + 1)
            tag = {"landed": "done", "failed": "crit", "running": "active"}.get(rec.state)
            meta = ", ".join(t for t in (tag, sid.lower(), str(start), str(end)) if t)
            label = _gantt_text(by_id[sid].title)
            tasks.append(f"    {sid} · {label} :{meta}")
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


def _usage_row(name: str, stories: str, usage: _Usage, time: str) -> str:
    if not usage.parts:
        return f"| {name} | {stories} | – | – | – | – | {time} |"
    return (
        f"| {name} | {stories} | {usage.input:,} | {usage.cached_text()} | {usage.output:,} "
        f"| {usage.cost_text()} | {time} |"
    )


def _cost(run: Run) -> list[str]:
    phases = _phases(run)
    total = _total(run)
    planning_time = run.plan_stats.duration_s if run.plan_stats else None
    story_ids = [s for s, r in run.stories.items() if _ran(r) and not s.startswith("F")]
    fix_ids = [s for s, r in run.stories.items() if _ran(r) and s.startswith("F")]
    story_time = sum(d for s in story_ids if (d := run.stories[s].duration_s) is not None)
    fix_time = sum(d for s in fix_ids if (d := run.stories[s].duration_s) is not None)
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
    for model, (usage, uses) in _models(run).items():
        used = ", ".join(uses) if len(uses) <= 8 else ", ".join(uses[:8]) + f" +{len(uses) - 8}"
        lines.append(
            f"| {escape_inline(model, 60)} | {used} | {usage.input:,} | {usage.cached_text()} "
            f"| {usage.output:,} | {usage.cost_text()} |"
        )
    lines += [
        "",
        "Input counts the whole prompt (cached reads included); an unknown price is shown as "
        "unknown, never as $0. Cached is not reported for planning.",
    ]
    return lines


def _timing_line(run: Run) -> str:
    """`wall 4m12s · sequential 11m40s · speedup 2.8× · critical path S2 → S4 (bound 3m55s)`."""
    wall = _wall_s(run)
    sequential = _sequential_s(run)
    bits = [f"wall {format_duration(wall)}", f"sequential {format_duration(sequential)}"]
    if wall and sequential is not None:
        bits.append(f"speedup {sequential / wall:.1f}×")
    path, bound, exact = _critical(run)
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
            body.append(_code_block(v.output_tail[-cap:]))
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
) -> str:
    rows = _rows(run)
    lines = [_closing_line(run)]
    if is_checkpoint(run):
        lines += ["", *_banner(run, rows)]
    lines += ["", "## Summary", ""]
    lines.append(_untrusted_markdown(run.plan.summary, 1500) if run.plan else "_No plan._")
    if run.plan is not None:
        if note is None or note > 0:
            design = _untrusted_markdown(run.plan.design_note, note)
        else:
            design = "_Design note omitted (size limit)._"
        lines += ["", *_block("Design note", [design])]
    lines += ["", "## Stories", "", *_story_table(rows, repo_html_url)]
    lines += _story_summaries(rows, summaries)
    lines += _failures(rows, evidence)
    lines += _refusals(rows)
    if gantt:
        lines += _gantt(run, rows)
    lines += _cost(run)
    lines += _timing(run)
    lines += _verification(run, evidence)
    lines += _commands(run)
    lines += _footer(run)
    return "\n".join(lines) + "\n"


def render_pr_body(run: Run, *, repo_html_url: str, limit: int = COMMENT_LIMIT) -> str:
    """The one pull request of a run: what landed, what failed, timeline, cost, checks.

    Fits `limit` by giving up, in order: evidence and output tails (first shortened to share
    what room is left, then omitted, together with the per-story summaries), the gantt, then
    the design note (shortened, then omitted); `fit_comment` is the last resort.
    """
    body = ""
    for gantt, note in _LAYOUTS:
        full = _body(run, repo_html_url, EVIDENCE_CAP, _SUMMARY_CAP, gantt=gantt, note=note)
        if _size(full) <= limit:
            return full
        body = _body(run, repo_html_url, 0, 0, gantt=gantt, note=note)
        spare = limit - _size(body)
        if spare < 0:
            continue
        blocks = _evidence_blocks(run)
        cap = min(EVIDENCE_CAP, (spare - 2000) // max(blocks, 1) - 120)
        while cap >= 200:  # share the spare room; the 2000 leaves space for summaries
            shorter = _body(run, repo_html_url, cap, cap // 5, gantt=gantt, note=note)
            if _size(shorter) <= limit:
                return shorter
            cap = cap * 3 // 4
        return body
    return fit_comment(body, limit)


# --- the final tracking comment -------------------------------------------------------------


def _final_state(run: Run) -> RunState:
    """The run's own terminal state, or one derived from the stories if it has none yet."""
    if run.state in ("done", "checkpoint", "failed", "cancelled"):
        return run.state
    if not is_checkpoint(run):
        return "done"
    return "checkpoint" if any(r.record.state == "landed" for r in _rows(run)) else "failed"


def _headline(state: RunState, landed: int, total: int) -> str:
    text = {
        "done": f"✅ Done — {landed}/{total} stories landed",
        "checkpoint": f"⚠️ Checkpoint — {landed}/{total} stories landed",
        "failed": f"❌ Failed — {landed}/{total} stories landed",
        "cancelled": f"⏹ Cancelled — {landed}/{total} stories landed",
    }
    return text.get(state, f"{landed}/{total} stories landed")


def _pr_line(run: Run, pr_url: str | None, state: RunState, landed: int) -> str:
    if pr_url:
        link = pr_url if _URL.fullmatch(pr_url) else escape_inline(pr_url, 200)
        draft = " (a checkpoint: review what landed)" if state == "checkpoint" else ""
        return f"**Pull request:** {link}{draft}"
    if landed == 0 and state == "cancelled":
        return (
            "**No pull request:** the run was cancelled before any story landed, so there is "
            "nothing to review. Comment `/baro` to start again."
        )
    if landed == 0 and run.pr_branch is not None:
        why = f" ({escape_inline(run.failure, 300)})" if run.failure else ""
        return (
            f"**Nothing added:** no story of this follow-up landed{why}, so the pull request "
            "is as it was. Comment `/baro retry` to retry the failed stories, or "
            "`/baro <instructions>` to try something else."
        )
    if landed == 0:
        why = f" ({escape_inline(run.failure, 300)})" if run.failure else ""
        return (
            f"**No pull request:** no story landed{why}, so there is nothing to review. Comment "
            "`/baro retry` to retry the failed stories, or edit the issue and comment "
            "`/baro plan` to plan again."
        )
    branch = f" <code>{escape_inline(run.branch, 120)}</code>" if run.branch else ""
    why = f" ({escape_inline(run.failure, 300)})" if run.failure else ""
    return (
        f"**No pull request yet:** the {landed} stories that landed are on the branch{branch}, "
        f"but the pull request was not opened{why}. Open one from that branch by hand, or "
        "comment `/baro retry` to try again."
    )


def _progress(rec: StoryRecord) -> StoryProgress:
    """A story that never ran cost nothing worth showing: no "$0.00" next to "blocked"."""
    progress = rec.progress()
    return progress if _ran(rec) else progress.model_copy(update={"cost_usd": None})


def render_final_comment(run: Run, *, pr_url: str | None, limit: int = COMMENT_LIMIT) -> str:
    """The tracking comment once a run ends: headline, PR link, totals and the checklist."""
    rows = _rows(run)
    state = _final_state(run)
    landed = _count(rows, "landed")
    total = _total(run)
    red = [v for v in run.verification if not v.passed]
    if not run.verification:
        checks = "none run"
    elif red:
        checks = f"❌ {len(red)} of {len(run.verification)} failed"
    else:
        checks = f"✅ {len(run.verification)} passed"
    lines = [
        marker(run.id),
        f"### {_headline(state, landed, len(rows))}",
        "",
        _pr_line(run, pr_url, state, landed),
        "",
        "| Landed | Failed | Blocked | Cancelled | Tokens | Cost | Wall time | Checks |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {landed} | {_count(rows, 'failed')} | {_count(rows, 'blocked')} "
        f"| {_count(rows, 'cancelled')} | {total.tokens:,} | {total.cost_text()} "
        f"| {format_duration(_wall_s(run))} | {checks} |",
    ]
    checklist = [checklist_line(r.story, _progress(r.record)) for r in rows if r.story]
    if checklist:
        lines += ["", *checklist]
    lines += ["", _commands_line(next_commands(state, True))]
    return fit_comment("\n".join(lines), limit)

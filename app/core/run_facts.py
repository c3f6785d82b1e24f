"""Facts a run's reports are made of: its stories in order, counts, times, usage (pure).

Shared by the pull request body (`app.core.pr_body`) and the final tracking comment
(`app.core.final_comment`), so both always say the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from app.core.dag import TIER_WEIGHTS, critical_path, topological_order
from app.core.markdown import format_cost
from app.core.plan import Plan, Story
from app.core.run import Run, StoryRecord


@dataclass(frozen=True)
class Row:
    """One story as the PR shows it: plan stories in topological order, then extras."""

    id: str
    title: str
    tier: str | None
    record: StoryRecord
    story: Story | None


def rows_of(run: Run) -> list[Row]:
    rows: list[Row] = []
    seen: set[str] = set()
    if run.plan is not None:
        for sid in topological_order(run.plan):
            story = run.plan.story(sid)
            rec = run.stories.get(sid) or StoryRecord()
            rows.append(Row(sid, story.title, rec.tier or story.tier, rec, story))
            seen.add(sid)
    for sid, rec in run.stories.items():  # records outside the plan (fix-ups)
        if sid not in seen:
            rows.append(Row(sid, rec.summary or sid, rec.tier, rec, None))
    return rows


def count_state(rows: Iterable[Row], state: str) -> int:
    return sum(1 for r in rows if r.record.state == state)


def landed_everything(run: Run) -> bool:
    """Every story of the plan landed (and there was a plan with at least one story)."""
    rows = rows_of(run)
    return bool(rows) and all(r.record.state == "landed" for r in rows)


def verification_red(run: Run) -> bool:
    return any(not v.passed for v in run.verification)


def is_checkpoint(run: Run) -> bool:
    """Not every story landed, or the integrated branch failed verification."""
    return not landed_everything(run) or verification_red(run)


def unix_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def wall_seconds(run: Run) -> float | None:
    """Run start → finish; the span of the stories when the run has no timestamps."""
    start, end = run.started_at, run.finished_at
    if start is None or end is None:
        starts = [r.started_at for r in run.stories.values() if r.started_at]
        ends = [r.finished_at for r in run.stories.values() if r.finished_at]
        if not starts or not ends:
            return None
        start, end = min(starts), max(ends)
    return max((end - start).total_seconds(), 0.0)


def sequential_seconds(run: Run) -> float | None:
    """What the stories would have taken one after another (every attempt that ran)."""
    durations = [d for r in run.stories.values() if (d := r.duration_s) is not None]
    return sum(durations) if durations else None


def duration_path(plan: Plan, durations: dict[str, float]) -> tuple[list[str], float]:
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


def critical_chain(run: Run) -> tuple[list[str], float | None, bool]:
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
        path, bound = duration_path(run.plan, durations)
        return path, bound, True
    path, _ = critical_path(run.plan, TIER_WEIGHTS)
    known = [durations[sid] for sid in path if sid in durations]
    return path, (sum(known) if known else None), False


@dataclass
class UsageTotals:
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

    def merge(self, other: UsageTotals) -> None:
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


def story_ran(rec: StoryRecord) -> bool:
    return bool(rec.model or rec.input_tokens or rec.output_tokens or rec.cost_usd is None)


def fix_story_ids(run: Run) -> set[str]:
    """Stories added after the plan: the verification fix and the review's fixes."""
    ids = {sid for review in run.reviews for sid in review.fixes}
    if run.fix_story is not None:
        ids.add(run.fix_story)
    return ids


def phase_usage(run: Run) -> dict[str, UsageTotals]:
    """planning / stories / review / fixes (stories added by verification or review)."""
    out = {
        "planning": UsageTotals(),
        "stories": UsageTotals(),
        "review": UsageTotals(),
        "fixes": UsageTotals(),
    }
    stats = run.plan_stats
    if stats is not None:
        out["planning"].add(stats.input_tokens, None, stats.output_tokens, stats.cost_usd)
    else:
        out["planning"].add(0, None, 0, None)
    for review in run.reviews:
        if review.stats is not None:
            rs = review.stats
            out["review"].add(rs.input_tokens, None, rs.output_tokens, rs.cost_usd)
    fixes = fix_story_ids(run)
    for sid, rec in run.stories.items():
        if story_ran(rec):
            phase = "fixes" if sid in fixes else "stories"
            out[phase].add(rec.input_tokens, rec.cache_read_tokens, rec.output_tokens, rec.cost_usd)
    return out


def total_usage(run: Run) -> UsageTotals:
    total = UsageTotals()
    for usage in phase_usage(run).values():
        total.merge(usage)
    return total


def model_usage(run: Run) -> dict[str, tuple[UsageTotals, list[str]]]:
    """model → (usage, what it was used for), in first-use order."""
    out: dict[str, tuple[UsageTotals, list[str]]] = {}

    def slot(model: str | None) -> tuple[UsageTotals, list[str]]:
        return out.setdefault(model or "unknown model", (UsageTotals(), []))

    stats = run.plan_stats
    if stats is not None:
        usage, uses = slot(stats.model)
        usage.add(stats.input_tokens, None, stats.output_tokens, stats.cost_usd)
        uses.append("planning")
    for review in run.reviews:
        if review.stats is not None:
            usage, uses = slot(review.stats.model)
            rs = review.stats
            usage.add(rs.input_tokens, None, rs.output_tokens, rs.cost_usd)
            uses.append(f"review {review.round}")
    for row in rows_of(run):
        rec = row.record
        if story_ran(rec):
            usage, uses = slot(rec.model)
            usage.add(rec.input_tokens, rec.cache_read_tokens, rec.output_tokens, rec.cost_usd)
            uses.append(row.id)
    return out

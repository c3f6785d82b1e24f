"""The tracking comment: one issue comment the bot edits in place for the life of a run.

Pure rendering. Every body starts with the hidden marker `<!-- baro:run:<id> -->` on its first
line, which is how the bot finds its comment again, and is fitted to GitHub's comment size
limit. Model-written text (titles, summary, design note) is treated as untrusted: sanitised,
escaped, mention-defanged and contained so it cannot break the layout or ping people.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence

from app.core.dag import TIER_WEIGHTS, critical_path, levels, topological_order, width
from app.core.plan import Plan, PlanStats, RunState, Story, StoryProgress
from app.core.sanitize import sanitize, strip_invisible

__all__ = [
    "COMMANDS",
    "COMMENT_LIMIT",
    "checklist_line",
    "escape_inline",
    "find_run_id",
    "fit_comment",
    "format_cost",
    "format_duration",
    "marker",
    "mermaid_graph",
    "mermaid_label",
    "next_commands",
    "render_failed",
    "render_help",
    "render_plan",
    "render_queued",
]

#: GitHub rejects issue comments and PR bodies longer than this.
COMMENT_LIMIT = 65536

#: Every command with a one-line meaning; keys double as the text a user types.
COMMANDS: Mapping[str, str] = {
    "/baro [instructions]": "plan and run this issue; extra instructions are optional",
    "/baro plan": "make a new plan and wait for approval before running it",
    "/baro approve": "start running the plan shown in this comment",
    "/baro cancel": "stop the run; stories that already landed stay on the branch",
    "/baro retry [S3 …]": (
        "retry failed or blocked stories (all of them if none are named), or open the pull "
        "request GitHub refused"
    ),
    "/baro status": "reply with the run's current checklist",
    "/baro help": "list the commands",
}

# Shorter meanings for the "Next:" line under a comment.
_NEXT_HINTS: Mapping[str, str] = {
    "/baro [instructions]": "to start a new run",
    "/baro plan": "to plan again",
    "/baro approve": "to start",
    "/baro cancel": "to stop",
    "/baro retry [S3 …]": "to retry what failed",
    "/baro status": "to refresh",
    "/baro help": "for all commands",
}

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MARKER = re.compile(r"<!-- baro:run:([A-Za-z0-9][A-Za-z0-9._:-]{0,127}) -->")
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")
_TRUNCATED = "_… truncated (comment size limit)._"


# --- small formatting helpers ---------------------------------------------------------------


def marker(run_id: str) -> str:
    """The hidden first line that identifies a run's tracking comment."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} is not usable in a comment marker")
    return f"<!-- baro:run:{run_id} -->"


def find_run_id(body: str) -> str | None:
    """The run id from a comment's first line, or None if it is not a tracking comment."""
    match = _MARKER.fullmatch(body.split("\n", 1)[0].strip())
    return match.group(1) if match else None


def format_cost(usd: float | None) -> str:
    """Dollars with enough digits for cheap runs; None is "unknown", never $0."""
    if usd is None:
        return "unknown"
    if usd < 0:
        return "-" + format_cost(-usd)
    if usd == 0:
        return "$0.00"
    if usd < 0.0001:
        return "<$0.0001"
    if usd < 1:
        digits = f"{usd:.4f}".rstrip("0")
        return "$" + (digits + "0" if len(digits.split(".")[1]) < 2 else digits)
    return f"${usd:,.2f}"


def format_duration(seconds: float | None) -> str:
    """`45s`, `2m13s`, `1h02m`; None is "unknown"."""
    if seconds is None:
        return "unknown"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def _clip(text: str, max_len: int | None) -> str:
    if max_len is not None and len(text) > max_len:
        return text[: max_len - 1].rstrip() + "…"
    return text


_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~&])")
_MENTION = re.compile(r"(?<![\w`/@.])@(?=[A-Za-z0-9])")


def _defang(text: str) -> str:
    """`@name` → `@&#8203;name`: shown the same, but GitHub does not notify anyone."""
    return _MENTION.sub("@&#8203;", text)


def escape_inline(text: str, max_len: int | None = None) -> str:
    """Untrusted text as one line of literal Markdown (no emphasis, links, HTML or pings)."""
    flat = _clip(" ".join(sanitize(text).split()), max_len)
    return _defang(_MD_INLINE.sub(r"\\\1", flat))


_MERMAID_ESCAPES = str.maketrans(
    {
        "#": "#35;",
        '"': "#quot;",
        "`": "#96;",
        "<": "#60;",
        ">": "#62;",
        "&": "#38;",
        "[": "#91;",
        "]": "#93;",
        "{": "#123;",
        "}": "#125;",
        "(": "#40;",
        ")": "#41;",
        "|": "#124;",
        ";": "#59;",
    }
)


def mermaid_label(text: str, max_len: int = 40) -> str:
    """Text safe inside a quoted Mermaid label (and inside the surrounding ``` fence)."""
    return _clip(" ".join(sanitize(text).split()), max_len).translate(_MERMAID_ESCAPES)


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n]*)$")
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")
_BLOCK_TAG = re.compile(r"<(/?)(details|summary)\b", re.IGNORECASE)


def _fence_open(line: str, fence: str | None) -> tuple[str | None, bool]:
    """Fence state after `line`; also whether the line is a fence delimiter."""
    match = _FENCE.match(line)
    if fence is None:
        if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            return match.group(1), True
        return None, False
    closes = match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence)
    if closes and match and not match.group(2).strip():
        return None, True
    return fence, False


def _contain_markdown(text: str, transform: Callable[[str], str]) -> str:
    """Apply `transform` outside code; close a fence the text left open."""
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        fence_before = fence
        fence, delimiter = _fence_open(line, fence)
        if fence_before is not None or delimiter:
            out.append(line)
            continue
        out.append(
            "".join(p if p.startswith("`") else transform(p) for p in _CODE_SPAN.split(line))
        )
    if fence is not None:
        out.append(fence)
    return "\n".join(out)


def _untrusted_markdown(text: str, max_len: int | None = None) -> str:
    """Model-written Markdown kept as Markdown, but unable to ping, hide or break out."""
    cleaned = _clip(sanitize(text).strip(), max_len)
    return _contain_markdown(cleaned, lambda s: _BLOCK_TAG.sub(r"&lt;\1\2", _defang(s)))


def _code_block(text: str, info: str = "text") -> str:
    """A fenced block longer than any backtick run inside, so the text cannot close it."""
    body = strip_invisible(text).strip("\n")  # comments are inert (and visible) in a fence
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


def _commands_line(commands: Sequence[str]) -> str:
    items = [f"`{c}` {_NEXT_HINTS[c]}" if c in _NEXT_HINTS else f"`{c}`" for c in commands]
    return "**Next:** " + " · ".join(items)


def next_commands(state: RunState, auto_execute: bool) -> list[str]:
    """The commands worth offering in a given run state."""
    if state == "planned" and not auto_execute:
        return ["/baro approve", "/baro plan", "/baro cancel", "/baro help"]
    if state in ("failed", "checkpoint"):
        return ["/baro retry [S3 …]", "/baro plan", "/baro help"]
    if state in ("done", "cancelled"):
        return ["/baro [instructions]", "/baro help"]
    return ["/baro status", "/baro cancel", "/baro help"]


# --- the comments ---------------------------------------------------------------------------


def render_queued(
    run_id: str, *, requester: str, trigger: str, instructions: str | None = None
) -> str:
    """The first body, posted within a second of the trigger."""
    who = f"@{requester}" if _LOGIN.fullmatch(requester) else escape_inline(requester)
    lines = [
        marker(run_id),
        "### 👀 baro is on it — planning will start shortly.",
        "",
        f"Requested by {who} via {escape_inline(trigger)}.",
    ]
    if instructions and instructions.strip():
        lines += ["", "> " + escape_inline(instructions, 500)]
    lines += ["", _commands_line(["/baro cancel", "/baro help"])]
    return fit_comment("\n".join(lines))


def _headline(state: RunState, auto_execute: bool, landed: int, total: int) -> str:
    if state == "planned":
        return (
            "📋 Plan ready — starting now"
            if auto_execute
            else "📋 Plan ready — waiting for `/baro approve`"
        )
    headlines: dict[str, str] = {
        "queued": "👀 Queued",
        "planning": "🧠 Planning…",
        "ready": "📋 Plan approved — starting now",
        "running": f"🚀 Running — {landed}/{total} stories landed",
        "finalizing": f"🔎 {landed}/{total} stories landed — verifying the branch",
        "done": f"✅ Done — {landed}/{total} stories landed",
        "failed": f"❌ Failed — {landed}/{total} stories landed",
        "cancelled": f"🚫 Cancelled — {landed}/{total} stories landed",
        "checkpoint": f"⚠️ Checkpoint — {landed}/{total} stories landed, some could not",
    }
    return headlines[state]


_STATE_MARKS = {
    "running": "⏳ running",
    "failed": "❌ failed",
    "blocked": "⛔ blocked",
    "cancelled": "🚫 cancelled",
}


def _progress_suffix(progress: StoryProgress | None) -> str:
    if progress is None or progress.state == "pending":
        return ""
    bits: list[str]
    if progress.state == "landed":
        bits = [f"✅ {format_duration(progress.duration_s)}"]
    else:
        bits = [_STATE_MARKS[progress.state]]
    if progress.model:
        bits.append(escape_inline(progress.model, 60))
    if progress.state == "landed" or progress.cost_usd is not None:
        bits.append(format_cost(progress.cost_usd))
    if progress.attempts > 1:
        bits.append(f"attempt {progress.attempts}")
    if progress.note:
        bits.append(escape_inline(progress.note, 200))
    return " " + " · ".join(bits)


def checklist_line(story: Story, progress: StoryProgress | None = None) -> str:
    """`- [ ] **S4** Title · standard · deps: S2, S3` plus live status once it has one."""
    tick = "x" if progress is not None and progress.state == "landed" else " "
    deps = ", ".join(story.depends_on) or "–"
    title = escape_inline(story.title, 200)
    return f"- [{tick}] **{story.id}** {title} · {story.tier} · deps: {deps}" + (
        _progress_suffix(progress)
    )


_STATE_STYLES = {
    "landed": "fill:#dcfce7,color:#14532d",
    "running": "fill:#dbeafe,color:#1e3a8a",
    "failed": "fill:#fee2e2,color:#7f1d1d",
    "blocked": "fill:#f3f4f6,color:#6b7280",
    "cancelled": "fill:#f3f4f6,color:#6b7280",
}


def mermaid_graph(
    plan: Plan, critical: Sequence[str] = (), progress: Mapping[str, StoryProgress] | None = None
) -> str:
    """A ```mermaid flowchart: dependency → dependent, critical path outlined, states filled."""
    order = topological_order(plan)
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'    {sid}["{sid} · {mermaid_label(plan.story(sid).title)}"]' for sid in order]
    critical_edges = set(itertools.pairwise(critical))
    highlighted: list[str] = []
    index = 0
    for sid in order:
        for dep in plan.story(sid).depends_on:
            lines.append(f"    {dep} --> {sid}")
            if (dep, sid) in critical_edges:
                highlighted.append(str(index))
            index += 1
    if critical:
        lines.append("    classDef critical stroke:#d97706,stroke-width:3px")
        lines.append(f"    class {','.join(critical)} critical")
    if highlighted:
        lines.append(f"    linkStyle {','.join(highlighted)} stroke:#d97706,stroke-width:3px")
    for state, style in _STATE_STYLES.items():
        ids = [
            sid for sid in order if progress and sid in progress and progress[sid].state == state
        ]
        if ids:
            lines.append(f"    classDef {state} {style}")
            lines.append(f"    class {','.join(ids)} {state}")
    lines.append("```")
    return "\n".join(lines)


def render_plan(
    run_id: str,
    plan: Plan,
    *,
    stats: PlanStats | None = None,
    state: RunState = "planned",
    auto_execute: bool = False,
    commands: Sequence[str] | None = None,
    progress: Mapping[str, StoryProgress] | None = None,
    weights: Mapping[str, int] = TIER_WEIGHTS,
    limit: int = COMMENT_LIMIT,
) -> str:
    """The tracking comment once a plan exists: checklist, numbers, graph, design note.

    `progress` (story id → StoryProgress) ticks the checklist during a run; `commands`
    overrides the default `next_commands(state, auto_execute)`.
    """
    progress = progress or {}
    order = topological_order(plan)
    path, length = critical_path(plan, weights)
    landed = sum(1 for p in progress.values() if p.state == "landed")
    tokens = f"{stats.total_tokens:,}" if stats else "unknown"
    cost = format_cost(stats.cost_usd if stats else None)
    summary = _untrusted_markdown(plan.summary, 1500)
    note = _untrusted_markdown(plan.design_note)
    lines = [
        marker(run_id),
        f"### {_headline(state, auto_execute, landed, len(order))}",
        "",
        *("> " + line if line else ">" for line in summary.split("\n")),
        "",
        "| Stories | Levels | Width | Critical path | Planner tokens | Planner cost |",
        "| ---: | ---: | ---: | --- | ---: | ---: |",
        f"| {len(order)} | {len(levels(plan))} | {width(plan)} "
        f"| {' → '.join(path)} (weight {length}) | {tokens} | {cost} |",
        "",
        *(checklist_line(plan.story(sid), progress.get(sid)) for sid in order),
        "",
        mermaid_graph(plan, path, progress),
        "",
        "<details><summary>Design note</summary>",
        "",
        note,
        "",
        "</details>",
        "",
        _commands_line(next_commands(state, auto_execute) if commands is None else commands),
    ]
    return fit_comment("\n".join(lines), limit)


def render_failed(
    run_id: str,
    reason: str,
    details: Sequence[str] | str = (),
    *,
    next_step: str | None = None,
    limit: int = COMMENT_LIMIT,
) -> str:
    """A failure that says what happened and what to do next.

    `reason` and `details` are plain text (escaped / fenced); `next_step` is our Markdown.
    """
    text = details if isinstance(details, str) else "\n".join(details)
    what = escape_inline(reason)
    if what and what[-1] not in ".!?:":
        what += "."
    lines = [
        marker(run_id),
        "### ❌ baro could not finish this run",
        "",
        f"**What happened:** {what}",
    ]
    if text.strip():
        lines += [
            "",
            "<details open><summary>Details</summary>",
            "",
            _code_block(text),
            "",
            "</details>",
        ]
    step = next_step or "edit the issue or comment `/baro plan` to try again."
    lines += ["", f"**What to do:** {step} `/baro help` lists all commands."]
    return fit_comment("\n".join(lines), limit)


def render_help() -> str:
    """The command reference, posted as its own reply (no run marker)."""
    rows = [f"| `{command}` | {meaning} |" for command, meaning in COMMANDS.items()]
    return "\n".join(
        [
            "### baro commands",
            "",
            "| Command | What it does |",
            "| --- | --- |",
            *rows,
            "",
            "Comment a command on the issue. Only people with write access to the repository "
            "can run commands. On a pull request baro opened, `/baro <instructions>` starts a "
            "follow-up run that adds its commits to that pull request's branch.",
        ]
    )


# --- fitting into the size limit ------------------------------------------------------------


def _size(text: str) -> int:
    """Length in UTF-16 code units: never less than code points, so safe for either count."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _prefix_within(text: str, units: int) -> str:
    prefix = text[: max(units, 0)]
    while (over := _size(prefix) - units) > 0:
        prefix = prefix[: len(prefix) - over]
    return prefix


def _closers(text: str) -> str:
    """What to append so a cut-off Markdown prefix closes its fence and <details> blocks."""
    fence: str | None = None
    depth = 0
    for line in text.split("\n"):
        fence_before = fence
        fence, delimiter = _fence_open(line, fence)
        if fence_before is None and not delimiter:
            depth += len(re.findall(r"<details\b", line, re.I))
            depth -= len(re.findall(r"</details>", line, re.I))
    out = f"\n{fence}" if fence else ""
    return out + "\n\n</details>" * max(depth, 0)


def _cut(text: str, units: int) -> str:
    """A prefix of at most `units`, cut at a line end, with open blocks closed and a note."""
    note = f"\n\n{_TRUNCATED}"
    budget = units - _size(note)
    while budget > 0:
        prefix = _prefix_within(text, budget)
        newline = prefix.rfind("\n")
        if len(prefix) < len(text) and newline >= len(prefix) * 0.8:
            prefix = prefix[:newline]  # end on a whole line unless that loses too much
        opened = prefix.rfind("<!--")
        if opened != -1 and "-->" not in prefix[opened:]:
            prefix = prefix[:opened]  # an unclosed comment would hide everything after it
        result = prefix.rstrip() + _closers(prefix) + note
        if _size(result) <= units:
            return result
        budget -= max(_size(result) - units, 16)
    return _prefix_within(_TRUNCATED, units)


def _regions(lines: list[str]) -> list[tuple[str, int, int]]:
    """Top-level ("details" | "mermaid" | "fence", first line, last line) blocks."""
    out: list[tuple[str, int, int]] = []
    fence: str | None = None
    depth = 0
    start = 0
    kind = ""
    for i, line in enumerate(lines):
        fence_before = fence
        fence, delimiter = _fence_open(line, fence)
        if delimiter and depth == 0:
            if fence_before is None:
                start, kind = i, ("mermaid" if line.strip().endswith("mermaid") else "fence")
            else:
                out.append((kind, start, i))
            continue
        if fence_before is not None or delimiter:
            continue
        opens = len(re.findall(r"<details\b", line, re.I))
        closes = len(re.findall(r"</details>", line, re.I))
        new_depth = max(depth + opens - closes, 0)
        if depth == 0 and opens:
            start = i
        if (depth > 0 or opens) and closes and new_depth == 0:
            out.append(("details", start, i))
        depth = new_depth
    return out


def _shrink_details(lines: list[str], excess: int) -> list[str] | None:
    """Shorten the largest <details> block by `excess`; None if there is nothing to shrink."""
    blocks = [(s, e) for kind, s, e in _regions(lines) if kind == "details" and e - s > 1]
    if not blocks:
        return None
    start, end = max(blocks, key=lambda b: _size("\n".join(lines[b[0] + 1 : b[1]])))
    inner = "\n".join(lines[start + 1 : end])
    if _size(inner) <= 120:
        return None
    keep = _size(inner) - excess - 2  # the blank line added below, and a spare
    cut = _cut(inner, keep) if keep > 200 else f"\n{_TRUNCATED}\n"
    return [*lines[: start + 1], *cut.split("\n"), "", *lines[end:]]


def _drop_graphs(lines: list[str]) -> list[str] | None:
    graphs = [(s, e) for kind, s, e in _regions(lines) if kind == "mermaid"]
    if not graphs:
        return None
    for start, end in reversed(graphs):
        lines = [*lines[:start], "_Graph omitted (comment size limit)._", *lines[end + 1 :]]
    return lines


_CHECKLIST_ITEM = re.compile(r"- \[[ xX]\] ")


def _cut_checklist(lines: list[str], excess: int) -> list[str] | None:
    """Drop items from the end of the longest checklist, leaving a count of what is gone."""
    runs: list[list[int]] = []
    for i, line in enumerate(lines):
        if _CHECKLIST_ITEM.match(line):
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    items = max(runs, key=len, default=[])
    if len(items) < 2:
        return None
    dropped: list[int] = []
    freed = 0
    for i in reversed(items[1:]):
        dropped.append(i)
        freed += _size(lines[i]) + 1
        if freed >= excess + 60:
            break
    note = f"- … {len(dropped)} more stories not shown (comment size limit)"
    first = min(dropped)
    return [*lines[:first], note, *lines[max(dropped) + 1 :]]


def fit_comment(body: str, limit: int = COMMENT_LIMIT) -> str:
    """Make `body` fit GitHub's limit, giving up the least useful parts first.

    Order: shorten the largest <details> block (the design note), drop Mermaid graphs, drop
    checklist lines from the end (with a "… N more stories not shown" line), and as a last
    resort cut the tail. The marker line stays; open ``` fences and <details> get closed.
    """
    if _size(body) <= limit:
        return body
    lines = body.split("\n")
    steps: list[Callable[[list[str], int], list[str] | None]] = [
        _shrink_details,
        _shrink_details,
        _shrink_details,
        lambda ls, _: _drop_graphs(ls),
        _cut_checklist,
    ]
    for step in steps:
        excess = _size("\n".join(lines)) - limit
        if excess <= 0:
            break
        lines = step(lines, excess) or lines
    text = "\n".join(lines)
    if _size(text) <= limit:
        return text
    first, _, rest = text.partition("\n")
    if find_run_id(first) is None:
        return _cut(text, limit)
    return first + "\n" + _cut(rest, limit - _size(first) - 1)

"""The tracking comment: one issue comment the bot edits in place for the life of a run.

Pure rendering. Every body starts with the hidden marker `<!-- baro:run:<id> -->` on its first
line, which is how the bot finds its comment again, and is fitted to GitHub's comment size
limit. Model-written text (titles, summary, design note) is treated as untrusted: sanitised,
escaped, mention-defanged and contained so it cannot break the layout or ping people.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

from app.core.dag import TIER_WEIGHTS, critical_path, levels, topological_order, width
from app.core.markdown import (
    COMMENT_LIMIT,
    code_block,
    escape_inline,
    fit_comment,
    format_cost,
    format_duration,
    mermaid_label,
    run_page_line,
    untrusted_markdown,
)
from app.core.plan import Plan, PlanStats, RunState, Story, StoryProgress
from app.core.run import RunEnvironment

__all__ = [
    "COMMANDS",
    "checklist_line",
    "environment_lines",
    "find_run_id",
    "marker",
    "mermaid_graph",
    "next_commands",
    "render_environment_failed",
    "render_failed",
    "render_help",
    "render_plan",
    "render_queued",
]

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


def commands_line(commands: Sequence[str]) -> str:
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
    lines += ["", commands_line(["/baro cancel", "/baro help"])]
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
    page_url: str | None = None,
    environment: Sequence[str] = (),
) -> str:
    """The tracking comment once a plan exists: checklist, numbers, graph, design note.

    `progress` (story id → StoryProgress) ticks the checklist during a run; `commands`
    overrides the default `next_commands(state, auto_execute)`; `page_url` links the run page.
    """
    progress = progress or {}
    order = topological_order(plan)
    path, length = critical_path(plan, weights)
    landed = sum(1 for p in progress.values() if p.state == "landed")
    tokens = f"{stats.total_tokens:,}" if stats else "unknown"
    cost = format_cost(stats.cost_usd if stats else None)
    summary = untrusted_markdown(plan.summary, 1500)
    note = untrusted_markdown(plan.design_note)
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
        *run_page_line(page_url),
        *environment,
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
        commands_line(next_commands(state, auto_execute) if commands is None else commands),
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
            code_block(text),
            "",
            "</details>",
        ]
    step = next_step or "edit the issue or comment `/baro plan` to try again."
    lines += ["", f"**What to do:** {step} `/baro help` lists all commands."]
    return fit_comment("\n".join(lines), limit)


def environment_lines(env: RunEnvironment | None, setup: Sequence[str] = ()) -> list[str]:
    """The plan comment's line naming where the run's commands run (and its `setup:`)."""
    if env is None:
        return []
    text = f"**Environment:** {_environment_md(env)}"
    if setup:
        shown = ", ".join(f"`{escape_inline(c, 120)}`" for c in setup[:5])
        more = f" and {len(setup) - 5} more" if len(setup) > 5 else ""
        text += f" · setup once per run: {shown}{more}"
    lines = ["", text]
    if env.note:
        lines.append(f"> {escape_inline(env.note, 500)}")
    return lines


def _environment_md(env: RunEnvironment) -> str:
    """The environment as Markdown: the image name in a code span (escaped if it cannot be)."""
    if env.image is None:
        return escape_inline(env.describe(), 300)
    if "`" in env.image or len(env.image) > 300:
        return f"image {escape_inline(env.image, 300)}"
    where = " (from `.github/baro.yml`)" if env.source == "baro.yml" else " (from the devcontainer)"
    return f"image `{env.image}`{where}"


def render_environment_failed(run_id: str, env: RunEnvironment, limit: int = COMMENT_LIMIT) -> str:
    """The run ended before any story started: its image or its `setup:` failed."""
    if env.error_kind == "setup":
        step = (
            "Fix the `setup:` commands in `.github/baro.yml` on the default branch (or what "
            "they install), then comment `/baro` to plan again; `/baro retry` tries the same "
            "settings again (for a registry or network that was down)."
        )
    else:
        step = (
            "Fix `image:` in `.github/baro.yml` (or the devcontainer's image) on the default "
            "branch and comment `/baro` to plan again, or ask the baro operator about "
            "registry access; `/baro retry` tries the same image again (for a registry that "
            "was down)."
        )
    where = _environment_md(env)
    what = escape_inline(env.error or "the environment could not be prepared", 1500)
    lines = [
        marker(run_id),
        "### ❌ The run's environment could not be prepared, so no story started",
        "",
        f"**Environment:** {where}",
        "",
        f"**What happened:** {what}",
    ]
    if env.output_tail and env.output_tail.strip():
        lines += [
            "",
            "<details open><summary>The command's last output</summary>",
            "",
            code_block(env.output_tail),
            "",
            "</details>",
        ]
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

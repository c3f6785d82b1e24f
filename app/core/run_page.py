"""The run page as HTML (pure): the DAG as inline SVG, the timeline's frame, every attempt.

Server-rendered so the page shows the run without its script; the script
(`app/web/static/run-page.js`) then draws the timeline, replays and follows the run from
`/runs/<id>.json`. No inline script or style, nothing from elsewhere: the page works offline
under `default-src 'none'`. Every piece of text from the issue, the plan or the models goes
through `html.escape` (attributes included), so a story title is shown, never run.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["NODE_H", "NODE_W", "dag_layout", "render_run_page"]

NODE_W = 190
NODE_H = 46
GAP_X = 56
GAP_Y = 14
PAD = 12
TITLE_CHARS = 24
SPEEDS = (1, 2, 5, 10, 30, 60)
DEFAULT_SPEED = 5


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dag_layout(
    level_ids: Sequence[Sequence[str]],
) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Top-left corner of every node (a column per level, plan order down each column) and
    the drawing's width and height."""
    positions: dict[str, tuple[int, int]] = {}
    for col, ids in enumerate(level_ids):
        for row, sid in enumerate(ids):
            positions[sid] = (PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    columns = len(level_ids)
    tallest = max((len(ids) for ids in level_ids), default=0)
    width = PAD * 2 + max(columns * NODE_W + (columns - 1) * GAP_X, 0)
    height = PAD * 2 + max(tallest * NODE_H + (tallest - 1) * GAP_Y, 0)
    return positions, width, height


def _edge(start: tuple[int, int], end: tuple[int, int]) -> str:
    x1, y1 = start[0] + NODE_W, start[1] + NODE_H // 2
    x2, y2 = end[0], end[1] + NODE_H // 2
    bend = (x2 - x1) // 2
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"


def _dag(view: Mapping[str, Any]) -> str:
    stories: list[Mapping[str, Any]] = view["stories"]
    positions, width, height = dag_layout(view["levels"])
    critical_edges = set(itertools.pairwise(view["critical_path"]))
    parts = [
        f'<svg id="dag" class="dag" role="img" aria-label="the plan as a graph" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for story in stories:
        for dep in story["depends_on"]:
            if dep not in positions or story["id"] not in positions:
                continue
            cls = "edge critical" if (dep, story["id"]) in critical_edges else "edge"
            parts.append(
                f'<path class="{cls}" data-from="{_e(dep)}" data-to="{_e(story["id"])}" '
                f'd="{_edge(positions[dep], positions[story["id"]])}"/>'
            )
    for story in stories:
        x, y = positions.get(story["id"], (PAD, PAD))
        cls = f"node state-{_e(story['state'])}" + (" critical" if story["critical"] else "")
        title = _clip(str(story["title"]), TITLE_CHARS)
        meta = f"{story['tier'] or ''} · {story['state']}"
        parts += [
            f'<g class="{cls}" data-story="{_e(story["id"])}" transform="translate({x},{y})">',
            f"<title>{_e(story['id'])}: {_e(story['title'])}</title>",
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="7"/>',
            f'<text class="label" x="10" y="19"><tspan class="sid">{_e(story["id"])}</tspan> '
            f"{_e(title)}</text>",
            f'<text class="meta" x="10" y="37">{_e(meta)}</text>',
            "</g>",
        ]
    parts.append("</svg>")
    return "".join(parts)


def _attempt_rows(attempts: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for a in attempts:
        outcome = str(a["outcome"])
        note = a["failure_kind"] or ""
        if a["message"]:
            note = f"{note}: {a['message']}" if note else a["message"]
        cells = [
            f'<td class="sid">{_e(a["story"])}</td>',
            f"<td>{_e(a['attempt'])}</td>",
            f"<td>{_e(a['tier'] or '–')}</td>",
            f"<td>{_e(a['model'] or '–')}</td>",
            f'<td class="num">{a["tokens"]:,}</td>',
            f'<td class="num">{_e(a["cost"])}</td>',
            f'<td class="num">{_e(a["duration"])}</td>',
            f'<td><span class="badge state-{_e(outcome)}">{_e(outcome)}</span></td>',
            f'<td class="note">{_e(note)}</td>',
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(rows)


def _totals(view: Mapping[str, Any]) -> str:
    t = view["totals"]
    path = " → ".join(view["critical_path"]) or "–"
    bound = view["critical_bound"]
    items = [
        ("Landed", f"{t['landed']}/{t['stories']}", "landed"),
        ("Failed", t["failed"], "failed"),
        ("Blocked", t["blocked"], "blocked"),
        ("Attempts", t["attempts"], "attempts"),
        ("Tokens", f"{t['tokens']:,}", "tokens"),
        ("Cost", t["cost"], "cost"),
        ("Wall time", t["wall"], "wall"),
        ("Critical path", f"{path} ({bound})" if bound != "–" else path, "critical"),
    ]
    return "".join(
        f'<div><dt>{_e(label)}</dt><dd data-total="{key}">{_e(value)}</dd></div>'
        for label, value, key in items
    )


LEGEND = ("pending", "queued", "running", "landed", "failed", "blocked")


def _legend() -> str:
    keys = [f'<span class="key state-{state}">{state}</span>' for state in LEGEND]
    keys.append('<span class="key critical">critical path</span>')
    return f'<p class="legend">{"".join(keys)}</p>'


def render_run_page(
    view: Mapping[str, Any], *, json_url: str, script_url: str, style_url: str
) -> str:
    """The whole page; `json_url` (with its token) is where the script reads the run from."""
    state = str(view["state"])
    heading = f"{view['repo']}#{view['issue_number']}"
    pr = ""
    pr_url = view.get("pr_url")
    if isinstance(pr_url, str) and pr_url.startswith(("https://", "http://")):
        pr = (
            f'<a class="pr" href="{_e(pr_url)}" rel="noreferrer">'
            f"pull request #{_e(view.get('pr_number'))}</a>"
        )
    summary = f'<p class="summary">{_e(view["summary"])}</p>' if view.get("summary") else ""
    speeds = "".join(
        f'<option value="{s}"{" selected" if s == DEFAULT_SPEED else ""}>{s}×</option>'
        for s in SPEEDS
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>baro · {_e(heading)} · run {_e(view["id"])}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{_e(style_url)}">
<script src="{_e(script_url)}" defer></script>
</head>
<body data-json="{_e(json_url)}" data-live="{"true" if view["live"] else "false"}">
<header>
<p class="crumbs">baro run <code>{_e(view["id"])}</code> · {_e(heading)} {pr}</p>
<h1><span id="run-state" class="badge state-{_e(state)}">{_e(view["headline"])}</span>
<span class="issue-title">{_e(view["issue_title"])}</span></h1>
{summary}
<dl id="totals" class="totals">{_totals(view)}</dl>
</header>
<main>
<section class="panel">
<h2>Plan <small>level 0 on the left; the critical path is outlined</small></h2>
<div class="scroll">{_dag(view)}</div>
{_legend()}
</section>
<section class="panel">
<h2>Timeline <small>every attempt, from dispatch to its end</small></h2>
<div class="controls">
<button id="play" type="button">▶ Replay</button>
<label>speed <select id="speed">{speeds}</select></label>
<input id="scrub" type="range" min="0" max="1000" step="1" value="1000"
 aria-label="replay position">
<output id="clock">{_e(view["elapsed_s"])}s</output>
<span id="live" class="live">{"● live" if view["live"] else ""}</span>
</div>
<div class="scroll"><svg id="timeline" class="timeline" role="img"
 aria-label="timeline of every attempt" width="900" height="40"
 xmlns="http://www.w3.org/2000/svg"></svg></div>
</section>
<section class="panel">
<h2>Attempts</h2>
<div class="scroll"><table id="attempts">
<thead><tr><th>Story</th><th>#</th><th>Tier</th><th>Model</th><th>Tokens</th><th>Cost</th><th>Time</th><th>Outcome</th><th>Note</th></tr></thead>
<tbody>{_attempt_rows(view["attempts"])}</tbody>
</table></div>
</section>
</main>
</body>
</html>
"""

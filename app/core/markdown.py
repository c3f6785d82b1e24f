"""Markdown that GitHub renders safely from untrusted text, and fitting it into a comment.

Shared by the tracking comment (`app.core.report`), the pull request body
(`app.core.pr_body`) and the final comment (`app.core.final_comment`). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from app.core.sanitize import sanitize, strip_invisible

#: GitHub rejects issue comments and PR bodies longer than this.
COMMENT_LIMIT = 65536
_TRUNCATED = "_… truncated (comment size limit)._"
_HIDDEN_MARKER = re.compile(r"<!-- [A-Za-z0-9:._ -]{1,200} -->")
"""A first line like `<!-- baro:run:<id> -->` (how the bot finds its comment) is kept."""


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


RUN_PAGE_TEXT = "the plan as a graph, every attempt on a timeline, a replay"


def run_page_line(url: str | None) -> list[str]:
    """The run page link as its own paragraph (nothing when there is no link). The URL is
    ours (the public URL and a token of `[0-9A-Za-z._-]`), so it needs no escaping."""
    if not url:
        return []
    return ["", f"📈 **[Run page]({url})**: {RUN_PAGE_TEXT}."]


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


def clip(text: str, max_len: int | None) -> str:
    if max_len is not None and len(text) > max_len:
        return text[: max_len - 1].rstrip() + "…"
    return text


def keep_ends(text: str, cap: int, gap: Callable[[int], str]) -> str:
    """Keep the first third and the last two thirds of `cap`: errors and summaries sit at the
    end. `gap(n)` is the line standing for the `n` characters left out."""
    if len(text) <= cap:
        return text
    head = cap // 3
    tail = cap - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n{gap(omitted)}\n{text[-tail:]}"


_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~&])")
_MENTION = re.compile(r"(?<![\w`/@.])@(?=[A-Za-z0-9])")


def _defang(text: str) -> str:
    """`@name` → `@&#8203;name`: shown the same, but GitHub does not notify anyone."""
    return _MENTION.sub("@&#8203;", text)


def escape_inline(text: str, max_len: int | None = None) -> str:
    """Untrusted text as one line of literal Markdown (no emphasis, links, HTML or pings)."""
    flat = clip(" ".join(sanitize(text).split()), max_len)
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
    return clip(" ".join(sanitize(text).split()), max_len).translate(_MERMAID_ESCAPES)


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


def untrusted_markdown(text: str, max_len: int | None = None) -> str:
    """Model-written Markdown kept as Markdown, but unable to ping, hide or break out."""
    cleaned = clip(sanitize(text).strip(), max_len)
    return _contain_markdown(cleaned, lambda s: _BLOCK_TAG.sub(r"&lt;\1\2", _defang(s)))


def code_block(text: str, info: str = "text") -> str:
    """A fenced block longer than any backtick run inside, so the text cannot close it."""
    body = strip_invisible(text).strip("\n")  # comments are inert (and visible) in a fence
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


# --- fitting into the size limit ------------------------------------------------------------


def comment_size(text: str) -> int:
    """Length in UTF-16 code units: never less than code points, so safe for either count."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _prefix_within(text: str, units: int) -> str:
    prefix = text[: max(units, 0)]
    while (over := comment_size(prefix) - units) > 0:
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
    budget = units - comment_size(note)
    while budget > 0:
        prefix = _prefix_within(text, budget)
        newline = prefix.rfind("\n")
        if len(prefix) < len(text) and newline >= len(prefix) * 0.8:
            prefix = prefix[:newline]  # end on a whole line unless that loses too much
        opened = prefix.rfind("<!--")
        if opened != -1 and "-->" not in prefix[opened:]:
            prefix = prefix[:opened]  # an unclosed comment would hide everything after it
        result = prefix.rstrip() + _closers(prefix) + note
        if comment_size(result) <= units:
            return result
        budget -= max(comment_size(result) - units, 16)
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
    start, end = max(blocks, key=lambda b: comment_size("\n".join(lines[b[0] + 1 : b[1]])))
    inner = "\n".join(lines[start + 1 : end])
    if comment_size(inner) <= 120:
        return None
    keep = comment_size(inner) - excess - 2  # the blank line added below, and a spare
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
        freed += comment_size(lines[i]) + 1
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
    if comment_size(body) <= limit:
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
        excess = comment_size("\n".join(lines)) - limit
        if excess <= 0:
            break
        lines = step(lines, excess) or lines
    text = "\n".join(lines)
    if comment_size(text) <= limit:
        return text
    first, _, rest = text.partition("\n")
    if not _HIDDEN_MARKER.fullmatch(first):
        return _cut(text, limit)
    return first + "\n" + _cut(rest, limit - comment_size(first) - 1)

"""The one commit message a story lands with: subject, cleaned summary, baro's trailers.

Pure. The `Baro-Run`/`Baro-Story` trailers are how a re-delivered job recognises a story
that already landed, so model-written text (title, summary) must never forge or displace
them: it is cleaned, capped, and stripped of anything that looks like a trailer.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

SUBJECT_MAX = 72
BODY_MAX = 4000
WRAP_WIDTH = 72
RUN_TRAILER = "Baro-Run"
STORY_TRAILER = "Baro-Story"
CO_AUTHOR_TRAILER = "Co-authored-by"
TRUNCATED = "[… summary truncated]"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")
# C0/C1 controls except tab and newline, zero-width and bidi characters.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
_TRAILER_LIKE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9-]*\s*:(\s|$)")
_RESERVED = re.compile(r"^\s*(baro-[a-z0-9-]*|co-authored-by|signed-off-by)\s*:", re.IGNORECASE)
_TRAILER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*): (.*\S)$")
_LIST_ITEM = re.compile(r"^((?:[-*+]|\d{1,3}[.)])\s+)")


@dataclass(frozen=True)
class CoAuthor:
    login: str
    user_id: int


@dataclass(frozen=True)
class CommitMessage:
    """What a story's commit says; `render()` gives the exact text that lands."""

    run_id: str
    story_id: str
    title: str
    summary: str = ""
    co_author: CoAuthor | tuple[str, int] | None = None

    def render(self) -> str:
        co = self.co_author
        pair = (co.login, co.user_id) if isinstance(co, CoAuthor) else co
        return render_commit_message(self.story_id, self.title, self.summary, self.run_id, pair)


def render_commit_message(
    story_id: str,
    title: str,
    summary: str,
    run_id: str,
    co_author: tuple[str, int] | None = None,
) -> str:
    """`S3: <title>`, blank line, cleaned summary, blank line, trailers; ends with a newline."""
    story = _checked_id(story_id, "story id")
    run = _checked_id(run_id, "run id")
    subject = _subject(f"{story}: {_one_line(title) or '(untitled story)'}")
    trailers = [f"{RUN_TRAILER}: {run}", f"{STORY_TRAILER}: {story}"]
    if co_author is not None:
        login, user_id = co_author
        if _LOGIN.fullmatch(login) and int(user_id) > 0:
            noreply = f"{int(user_id)}+{login}@users.noreply.github.com"
            trailers.append(f"{CO_AUTHOR_TRAILER}: {login} <{noreply}>")
    body = clean_body(summary)
    parts = [subject, body, "\n".join(trailers)] if body else [subject, "\n".join(trailers)]
    return "\n\n".join(parts) + "\n"


def clean_body(text: str, limit: int = BODY_MAX) -> str:
    """Model text made safe for a commit body: no controls, no trailers, wrapped, capped."""
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    wrapped = _wrap([line.rstrip() for line in text.split("\n")])
    lines = [line for line in wrapped if not _RESERVED.match(line)]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    if len(body) > limit:
        cut = body.rfind("\n", 0, limit - len(TRUNCATED) - 1)
        body = body[: cut if cut > 0 else limit - len(TRUNCATED) - 1].rstrip() + "\n" + TRUNCATED
    return _strip_trailing_trailers(body)


def parse_trailers(message: str) -> list[tuple[str, str]]:
    """The `Key: value` lines of the last paragraph, or [] when it is not all trailers."""
    paragraphs = [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    if len(paragraphs) < 2:
        return []
    found = []
    for line in paragraphs[-1].split("\n"):
        match = _TRAILER.match(line.strip())
        if match is None:
            return []
        found.append((match.group(1), match.group(2)))
    return found


def is_story_commit(message: str, run_id: str, story_id: str) -> bool:
    """True when the message's trailers name exactly this run and story."""
    trailers = {(key.lower(), value) for key, value in parse_trailers(message)}
    wanted = {(RUN_TRAILER.lower(), run_id), (STORY_TRAILER.lower(), story_id)}
    return wanted <= trailers


def _checked_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def _one_line(text: str) -> str:
    return " ".join(_INVISIBLE.sub(" ", text).split())


def _subject(text: str) -> str:
    if len(text) <= SUBJECT_MAX:
        return text
    cut = text[: SUBJECT_MAX - 1]
    space = cut.rfind(" ")
    if space > SUBJECT_MAX // 2:
        cut = cut[:space]
    return cut.rstrip(" .,;:-") + "…"


def _wrap(lines: list[str]) -> list[str]:
    """Wrap long prose lines; code blocks, indented lines and tables stay as they are."""
    out: list[str] = []
    fenced = False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or len(line) <= WRAP_WIDTH or line[:1].isspace() or line.startswith("|"):
            out.append(line)
            continue
        item = _LIST_ITEM.match(line)
        indent = " " * len(item.group(1)) if item else ""
        out.extend(
            textwrap.wrap(
                line,
                WRAP_WIDTH,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or [line]
        )
    return out


def _strip_trailing_trailers(body: str) -> str:
    lines = body.split("\n")
    while lines and (not lines[-1].strip() or _TRAILER_LIKE.match(lines[-1])):
        lines.pop()
    return "\n".join(lines)

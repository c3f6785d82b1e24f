"""The `/baro …` comment grammar (pure).

Only the first line of a comment counts. `/baro` alone starts a run; a reserved word after it
is a command; anything else is free-form instructions for the planner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Verb = Literal["run", "plan", "approve", "cancel", "retry", "status", "help"]

RESERVED: frozenset[str] = frozenset({"plan", "approve", "cancel", "retry", "status", "help"})
STORY_ID = re.compile(r"^S[1-9][0-9]*$")
_PREFIX = re.compile(r"^/baro(?=$|\s)(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Command:
    verb: Verb
    instructions: str = ""
    stories: tuple[str, ...] = field(default_factory=tuple)


class CommandError(ValueError):
    """A reserved command with bad arguments; the message is shown to the user."""


def parse_command(body: str) -> Command | None:
    """Parse a comment body; None when its first line is not a `/baro` command."""
    first_line, _, rest = body.lstrip("\ufeff").strip().partition("\n")
    match = _PREFIX.match(first_line.strip())
    if match is None:
        return None
    args = match.group(1).strip()
    word, _, tail = args.partition(" ")
    word_lower = word.lower()
    if word_lower not in RESERVED:
        text = "\n".join(part for part in (args, rest.strip()) if part)
        return Command("run", instructions=text)
    tail = tail.strip()
    if word_lower == "retry":
        ids = tuple(token.upper() for token in tail.replace(",", " ").split())
        bad = [token for token in ids if not STORY_ID.match(token)]
        if bad:
            raise CommandError(
                f"`/baro retry` takes story ids like S3; not understood: {', '.join(bad)}"
            )
        return Command("retry", stories=tuple(dict.fromkeys(ids)))
    if word_lower == "plan":
        text = "\n".join(part for part in (tail, rest.strip()) if part)
        return Command("plan", instructions=text)
    return Command(word_lower)  # type: ignore[arg-type]

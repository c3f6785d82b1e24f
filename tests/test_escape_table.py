"""The README's escape table names tests that exist (a renamed test must update the table)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("| attack from a story's worktree or commands |")
    return [line for line in text[start:].splitlines() if line.startswith("|")]


def test_every_test_in_the_escape_table_exists() -> None:
    named: list[tuple[str, str]] = []
    current = ""
    for row in table_rows():
        for ref in re.findall(r"`((?:tests/[\w/]+\.py)?::\w+|tests/[\w/]+\.py)`", row):
            path, _, name = ref.partition("::")
            current = path or current
            named.append((current, name))
    assert len(named) > 20
    missing = []
    for path, name in named:
        source = (ROOT / path).read_text()
        if name and not re.search(rf"^(async )?def {name}\(", source, re.M):
            missing.append(f"{path}::{name}")
    assert missing == []

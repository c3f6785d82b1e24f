"""ARCHITECTURE.md stays the map: every module it names exists, and every module is named."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "ARCHITECTURE.md").read_text()


def named() -> set[str]:
    """Paths in backticks, with `a.py`, `b.py` rows expanded against the row's first path."""
    found: set[str] = set()
    for line in TEXT.splitlines():
        paths = re.findall(r"`((?:app|runner|testbed)/[\w/]*\.py)", line)
        found.update(paths)
        if paths and line.startswith("|"):
            base = paths[0].rsplit("/", 1)[0]
            cell = line.split("|")[1]
            found.update(f"{base}/{name}" for name in re.findall(r"`(\w+\.py)`", cell))
        found.update(p.split(":")[0] for p in re.findall(r"`((?:app|runner)/[\w/]+\.py):", line))
    return found


def test_every_module_named_exists() -> None:
    missing = sorted(p for p in named() if not (ROOT / p).is_file())
    assert missing == []


def test_every_module_is_named() -> None:
    modules = {
        p.relative_to(ROOT).as_posix()
        for package in ("app", "runner")
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    }
    dirs = {d for d in re.findall(r"`((?:app|runner)/[\w/]*/)`", TEXT)}
    covered = {m for m in modules if any(m.startswith(d) for d in dirs if d == "app/llm/")}
    assert sorted(modules - named() - covered) == []

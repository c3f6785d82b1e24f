"""Snapshot checks: rendered text compared with a committed file beside the test."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

UPDATE = "UPDATE_SNAPSHOTS"


def snapshots(directory: Path) -> Callable[[str, str], None]:
    """`assert_snapshot(name, text)` for the snapshots kept in `directory`: the text must
    equal the file `name`; with UPDATE_SNAPSHOTS=1 the file is (re)written instead, to be
    reviewed in the diff."""

    def assert_snapshot(name: str, text: str) -> None:
        path = directory / name
        if os.environ.get(UPDATE) == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if not path.exists():
            pytest.fail(f"snapshot {path} is missing; run with {UPDATE}=1 and review it")
        assert text == path.read_text(encoding="utf-8")

    return assert_snapshot

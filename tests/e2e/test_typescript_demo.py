"""`scripts/demo --typescript` end to end: a TypeScript service whose `setup:` is a real
`npm ci` (from the machine's npm cache when there is one, else the npm registry), six
stories whose Jest tests and type-check really run in the sandbox, one green PR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NPM_CACHE = Path.home() / ".npm"


@pytest.mark.timeout(300)  # six stories of real Jest and tsc runs on a shared machine
def test_the_typescript_demo_lands_six_stories_and_a_green_pr(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    argv = [sys.executable, "-m", "testbed.demo", "--typescript", "--json", str(summary_file)]
    if (NPM_CACHE / "_cacache").is_dir():
        argv += ["--npm-cache", str(NPM_CACHE)]
    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out[-6000:] + result.stderr[-3000:]
    assert "setup once per run: `npm ci --no-audit --no-fund`" in out
    assert "✅ Done — 6/6 stories landed" in out
    assert "<code>npx tsc --noEmit</code> | 0" in out and "<code>npx jest</code> | 0" in out
    assert "S4: Request handler" in out and "S1: Refuse to remove more than is in stock" in out
    summary = json.loads(summary_file.read_text())
    assert summary["state"] == "done" and summary["pr"]["draft"] is False
    assert all(s["attempts"] == 1 for s in summary["stories"].values())

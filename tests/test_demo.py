"""The README's demo command runs end to end (its Python part; scripts/demo adds set-up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "testbed.demo", "--json", str(summary_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "← 202" in out
    assert "baro is on it" in out
    assert "- [ ] **S4** Command-line interface · standard · deps: S2, S3" in out
    assert "```mermaid" in out
    assert "✅ Done — 6/6 stories landed" in out
    assert "Closes #1" in out
    assert "S5: CLI tests" in out and "S1: Refuse to remove more than is in stock" in out
    assert "__pycache__" not in out
    assert "labels on the issue: ['baro', 'baro:done']" in out
    assert "⏳ S1 running" in out and "✅ S5 landed" in out  # progress streamed
    assert "demo finished" in out
    summary = json.loads(summary_file.read_text())
    assert summary["state"] == "done"
    assert summary["pr"]["number"] == 2 and summary["pr"]["draft"] is False
    assert sorted(summary["stories"]) == ["S1", "S2", "S3", "S4", "S5", "S6"]
    assert all(
        s["state"] == "landed" and len(s["commit"]) == 40 for s in summary["stories"].values()
    )

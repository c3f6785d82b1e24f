"""Housekeeping benchmark: one sweep of a busy runner data directory.

Builds `--mirrors` bare mirrors (half of them idle past the limit, each with a stale worktree
record), `--dead` owner directories of runner processes that died (each holding a checkout of
`--files` files) and one live owner, then times `runner.housekeeping.sweep` — the pass every
runner makes at start-up and every 10 minutes, in a thread beside its stories. A second pass
over the cleaned directory is what the steady state costs. Prints one JSON object.

    uv run python bench/housekeeping.py
    uv run python bench/housekeeping.py --mirrors 500 --dead 50 --files 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from runner.housekeeping import WorktreeOwner, sweep

DAY = 86400.0


def build(root: Path, mirrors: int, dead: int, files: int) -> WorktreeOwner:
    owners = root / "mirrors" / "octo"
    owners.mkdir(parents=True)
    past = time.time() - 30 * DAY
    for i in range(mirrors):
        mirror = owners / f"repo{i}.git"
        subprocess.run(["git", "init", "--quiet", "--bare", "--template=", str(mirror)], check=True)
        record = mirror / "worktrees" / f"gone{i}"
        record.mkdir(parents=True)
        (record / "gitdir").write_text(f"{root}/worktrees/dead0/gone{i}/.git\n")
        lock = mirror.with_name(mirror.name + ".lock")
        lock.touch()
        if i % 2 == 0:
            os.utime(lock, (past, past))  # idle for a month
    worktrees = root / "worktrees"
    for d in range(dead):
        checkout = worktrees / f"dead{d}" / "r1-S1-1-abcdef"
        for f in range(files):
            path = checkout / f"pkg{f % 20}" / f"m{f}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"value = {f}\n")
        (worktrees / f"dead{d}.lock").touch()
    live = WorktreeOwner(worktrees, "live")
    live.acquire()
    return live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mirrors", type=int, default=200)
    parser.add_argument("--dead", type=int, default=20)
    parser.add_argument("--files", type=int, default=1000, help="files per dead checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="baro-bench-hk-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        live = build(root, args.mirrors, args.dead, args.files)
        built = time.perf_counter() - started
        started = time.perf_counter()
        first = sweep(root, max_idle_seconds=14 * DAY)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        again = sweep(root, max_idle_seconds=14 * DAY)
        again_s = time.perf_counter() - started
        live.release()
    print(
        json.dumps(
            {
                "mirrors": args.mirrors,
                "dead_owners": args.dead,
                "files_per_checkout": args.files,
                "build_s": round(built, 2),
                "first_sweep_s": round(first_s, 3),
                "removed": {
                    "worktree_dirs": len(first.worktrees),
                    "mirrors": len(first.mirrors),
                },
                "steady_sweep_s": round(again_s, 3),
                "steady_removed": len(again.worktrees) + len(again.mirrors),
                "cores": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

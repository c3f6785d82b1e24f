"""Sandbox limits benchmark: what the per-command worktree measurement and supervision cost.

Builds worktrees of `--sizes` files (default 5,000 and 100,000; small source-like files in
directories of 100, as a repository with a node_modules would be) and times, per size:

- `disk_usage`: the walk an unprivileged runner makes before each command (and after it,
  when free space dropped by more than the cap);
- `lend_walks` (root only): lending the worktree to a fresh uid and taking it back, the two
  ownership walks a root runner always made, now also summing the usage;
- `command`: a whole `Sandbox.run("true")` on that worktree (start, supervision, settle),
  with the runner's own mechanism and with the watchdog.

Medians of `--repeat` runs, in seconds. Prints one JSON object.

    uv run python bench/sandbox_limits.py
    uv run python bench/sandbox_limits.py --sizes 5000 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.diskcap import disk_usage
from runner.ownership import lend_tree
from runner.sandbox import Sandbox, SandboxPolicy


def build(root: Path, files: int) -> Path:
    tree = root / f"wt-{files}"
    for i in range(files):
        directory = tree / f"d{i // 100:05d}"
        if i % 100 == 0:
            directory.mkdir(parents=True)
        (directory / f"m{i}.js").write_text(f"module.exports = {i};\n" * 4)
    root.chmod(0o711)
    return tree


def median(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


async def command_time(sandbox: Sandbox, tree: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await sandbox.run("true", cwd=tree, timeout=60)
        times.append(time.perf_counter() - started)
        assert result.ok, result.output
    return round(statistics.median(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bwrap", default="/usr/bin/bwrap")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="baro-bench-limits-"))
    auto = Sandbox(SandboxPolicy(bwrap_path=args.bwrap))
    watchdog = Sandbox(dataclasses.replace(auto.policy, cgroup="none"))
    report: dict[str, Any] = {
        "uid": os.geteuid(),
        "mechanism": asyncio.run(auto.describe_memory_cap()),
        "repeat": args.repeat,
        "trees": [],
    }
    try:
        for files in args.sizes:
            tree = build(root, files)
            usage = disk_usage(tree)
            row: dict[str, Any] = {
                "files": files,
                "entries": usage.entries,
                "used_mib": round(usage.bytes / 2**20, 1),
                "disk_usage_s": median(lambda tree=tree: disk_usage(tree), args.repeat),
            }
            if os.geteuid() == 0:
                uid = 2_050_000_000

                def lend_and_back(tree: Path = tree, uid: int = uid) -> None:
                    lend_tree(tree, uid, uid)
                    lend_tree(tree, 0, 0)

                row["lend_walks_s"] = median(lend_and_back, args.repeat)
            row["command_s"] = asyncio.run(command_time(auto, tree, args.repeat))
            row["command_watchdog_s"] = asyncio.run(command_time(watchdog, tree, args.repeat))
            report["trees"].append(row)
            shutil.rmtree(tree)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

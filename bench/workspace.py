"""Runner workspace latency on a large repository, against the testbed's real git smart HTTP.

Generates a deterministic repository (default 5,000 text files, ~50 MB) in the testbed
GitHub, then measures with `time.perf_counter`:

* cold prepare: `Workspaces.prepare` on an empty data dir (mirror created, full fetch,
  worktree checkout);
* warm prepare: `prepare` with the mirror already there (fetch of the run-branch head,
  worktree checkout);
* land: `land` of a one-file change (commit + push over smart HTTP);
* cleanup: handing the worktree back to the runner's idle pool (reported, no goal).

and prints one JSON object with p50/p90/max per phase, the repository size, the mean
time per git command inside each phase (`steps`, to see where the time goes), and whether
the project's goals (p50 of warm prepare <= 0.5 s and of land <= 1 s) are met.

On a slow filesystem the warm repetitions stop early (at least 3) once `--budget` seconds
have gone by, so the run stays short; `n` says how many were measured.

    uv run python bench/workspace.py [--files N] [--repeat K]

Other options: `--cold K` (cold prepares, default 3), `--avg-bytes B` (mean file size,
default 10,000), `--seed S`, `--budget S` (default 120), `--trace2 FILE` (append git's
GIT_TRACE2_PERF output of the runner's git commands to FILE). The data dirs live under
$TMPDIR (e.g. `TMPDIR=/dev/shm` to compare with tmpfs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runner.mirror  # noqa: E402
import runner.worktree  # noqa: E402
from app.gitcmd import GitAuth  # noqa: E402
from runner.workspace import (  # noqa: E402
    CommitMessage,
    RepoRef,
    Workspaces,
    Worktree,
    land,
)
from testbed.github.entities import Repo  # noqa: E402
from testbed.github.gitops import git_env  # noqa: E402
from testbed.github.server import running_testbed  # noqa: E402
from testbed.github.state import GitHubState  # noqa: E402

BRANCH = "baro/issue-1-bench"
RUN = "bench"
GOALS = {"warm_prepare_p50_s": 0.5, "land_p50_s": 1.0}
EPOCH = 1_700_000_000

# Git commands run by the runner, per phase: (phase, label, seconds).
_Record = tuple[str, str, float]


class Recorder:
    """Times every git command the runner runs, attributed to the phase being measured."""

    def __init__(self, trace2: Path | None) -> None:
        self.phase = "setup"
        self.records: list[_Record] = []
        self.trace2 = trace2

    def wrap(self, original: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
        async def timed(
            args: Sequence[str], *, env: Mapping[str, str] | None = None, **kw: Any
        ) -> str:
            if self.trace2 is not None:
                env = {**(env or {}), "GIT_TRACE2_PERF": str(self.trace2)}
            label = " ".join(args[:2]) if args[0] == "worktree" else args[0]
            start = time.perf_counter()
            try:
                return await original(args, env=env, **kw)
            finally:
                self.records.append((self.phase, label, time.perf_counter() - start))

        return timed

    def install(self) -> None:
        # The runner modules call `run_git` through their own global name.
        for module in (runner.mirror,):
            module.run_git = self.wrap(module.run_git)  # type: ignore[attr-defined]

    @contextmanager
    def measuring(self, phase: str) -> Iterator[None]:
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

    def steps(self, phase: str, runs: int) -> dict[str, float]:
        """Mean seconds per repetition of `phase` in each git command (label)."""
        per_label: dict[str, list[float]] = defaultdict(list)
        for rec_phase, label, seconds in self.records:
            if rec_phase == phase:
                per_label[label].append(seconds)
        out: dict[str, float] = {}
        for label, values in per_label.items():
            calls = len(values) / max(runs, 1)
            total = sum(values) / max(runs, 1)
            key = label if calls <= 1 else f"{label} (x{calls:.3g})"
            out[key] = round(total, 4)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# -- repository generation ---------------------------------------------------------------


def _vocabulary(rng: random.Random, size: int = 2_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz_"
    return ["".join(rng.choices(letters, k=rng.randint(2, 12))) for _ in range(size)]


def _content(rng: random.Random, vocab: list[str], target: int) -> bytes:
    words = rng.choices(vocab, k=max(1, target // 7))
    lines = [" ".join(words[i : i + 10]) for i in range(0, len(words), 10)]
    return ("\n".join(lines) + "\n").encode()


def _paths(count: int) -> list[str]:
    per_dir = 50
    return [
        f"src/pkg{i // (per_dir * 20):02d}/mod{(i // per_dir) % 20:02d}/file{i % per_dir:02d}.txt"
        for i in range(count)
    ]


def populate(git_dir: Path, files: int, avg_bytes: int, seed: int) -> tuple[int, int]:
    """One commit on `main` (on top of the testbed's initial one) with `files` seeded text
    files of log-normal sizes, written straight into the bare repo by `git fast-import`.
    Returns (file count, total bytes)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    sigma = 1.0
    mu = math.log(avg_bytes) - sigma**2 / 2
    parent = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-parse", "refs/heads/main"],
        check=True,
        capture_output=True,
        text=True,
        env=git_env(),
    ).stdout.strip()
    proc = subprocess.Popen(
        ["git", f"--git-dir={git_dir}", "fast-import", "--quiet", "--force"],
        stdin=subprocess.PIPE,
        env=git_env(),
    )
    assert proc.stdin is not None
    total = 0
    paths = _paths(files)
    for mark, _ in enumerate(paths, start=1):
        size = int(min(max(rng.lognormvariate(mu, sigma), 64), 40 * avg_bytes))
        data = _content(rng, vocab, size)
        total += len(data)
        proc.stdin.write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
    message = b"Add generated benchmark tree\n"
    who = b"bench <bench@example.com> %d +0000" % EPOCH
    proc.stdin.write(
        b"commit refs/heads/main\nauthor %s\ncommitter %s\ndata %d\n%s\nfrom %s\n"
        % (who, who, len(message), message, parent.encode())
    )
    for mark, path in enumerate(paths, start=1):
        proc.stdin.write(b"M 100644 :%d %s\n" % (mark, path.encode()))
    proc.stdin.write(b"\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    subprocess.run(
        ["git", f"--git-dir={git_dir}", "update-ref", f"refs/heads/{BRANCH}", "refs/heads/main"],
        check=True,
        env=git_env(),
    )
    return files, total


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- measurement -------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90_index = max(0, math.ceil(0.9 * len(ordered)) - 1)
    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 4),
        "p90_s": round(ordered[p90_index], 4),
        "max_s": round(ordered[-1], 4),
    }


def _message(story: str) -> CommitMessage:
    return CommitMessage(RUN, story, "Bench change", "One-line edit.", ("octo", 1))


def _edit(worktree: Worktree, index: int, paths: list[str]) -> None:
    path = worktree.path / paths[(index * 7919) % len(paths)]
    with path.open("a") as handle:
        handle.write(f"edited by story {index}\n")


async def measure(
    ref: RepoRef,
    auth: GitAuth,
    state_head: Callable[[], str | None],
    work: Path,
    paths: list[str],
    *,
    repeat: int,
    cold: int,
    budget: float,
    recorder: Recorder,
) -> dict[str, Any]:
    async def prepare(ws: Workspaces, story: str) -> Worktree:
        return await ws.prepare(ref, BRANCH, auth, run_id=RUN, story_id=story, attempt=1)

    began = time.perf_counter()
    cold_times: list[float] = []
    warm = Workspaces(work / "warm")
    for i in range(cold):
        ws = warm if i == cold - 1 else Workspaces(work / f"cold{i}")
        with recorder.measuring("cold_prepare"):
            start = time.perf_counter()
            wt = await prepare(ws, f"C{i}")
            cold_times.append(time.perf_counter() - start)
        await ws.cleanup(wt)
        if ws is not warm:
            await asyncio.to_thread(shutil.rmtree, ws.data_dir, True)
    mirror_bytes = await asyncio.to_thread(_dir_bytes, warm.mirrors.get(ref).path)

    prepare_times: list[float] = []
    land_times: list[float] = []
    cleanup_times: list[float] = []
    for i in range(repeat):
        if i >= 3 and time.perf_counter() - began > budget:
            break
        with recorder.measuring("warm_prepare"):
            start = time.perf_counter()
            wt = await prepare(warm, f"W{i}")
            prepare_times.append(time.perf_counter() - start)
        _edit(wt, i, paths)
        with recorder.measuring("land"):
            start = time.perf_counter()
            landed = await land(wt, _message(f"W{i}"), auth)
            land_times.append(time.perf_counter() - start)
        if landed.attempts != 1 or state_head() != landed.sha:
            raise RuntimeError(f"unexpected landing {landed}")
        with recorder.measuring("cleanup"):
            start = time.perf_counter()
            await warm.cleanup(wt)  # as the runner does: back to the idle pool for reuse
            cleanup_times.append(time.perf_counter() - start)

    return {
        "cold_prepare": summary(cold_times),
        "warm_prepare": summary(prepare_times),
        "land": summary(land_times),
        "cleanup": summary(cleanup_times),
        "mirror_bytes": mirror_bytes,
        "steps": {
            "cold_prepare": recorder.steps("cold_prepare", cold),
            "warm_prepare": recorder.steps("warm_prepare", len(prepare_times)),
            "land": recorder.steps("land", len(land_times)),
            "cleanup": recorder.steps("cleanup", len(cleanup_times)),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--avg-bytes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--trace2", type=Path, default=None)
    args = parser.parse_args()
    if args.files < 1 or args.repeat < 1 or args.cold < 1:
        parser.error("--files, --repeat and --cold must be at least 1")

    recorder = Recorder(args.trace2.resolve() if args.trace2 else None)
    recorder.install()
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="baro-bench-ws-") as tmp,
        GitHubState(Path(tmp) / "github") as state,
        running_testbed(state) as tb,
    ):
        app = state.create_app("baro-bench")
        inst = state.create_installation(app, "octo")
        repo: Repo = state.create_repo("octo", "big", installation=inst)
        gen_start = time.perf_counter()
        count, total = populate(repo.git_dir, args.files, args.avg_bytes, args.seed)
        generate_s = time.perf_counter() - gen_start
        pack_bytes = _dir_bytes(repo.git_dir / "objects")
        token = state.create_token(inst)
        ref = RepoRef(repo.full_name, tb.clone_url(repo))
        result = asyncio.run(
            measure(
                ref,
                GitAuth(token.token),
                lambda: state.branch_sha(repo, BRANCH),
                Path(tmp) / "runner",
                _paths(count),
                repeat=args.repeat,
                cold=args.cold,
                budget=args.budget,
                recorder=recorder,
            )
        )

    warm_p50 = result["warm_prepare"]["p50_s"]
    land_p50 = result["land"]["p50_s"]
    output = {
        "repo": {
            "files": count + 1,  # + the testbed's README.md
            "worktree_bytes": total,
            "worktree_mb": round(total / 1e6, 1),
            "server_objects_bytes": pack_bytes,
            "mirror_bytes": result.pop("mirror_bytes"),
        },
        **result,
        "goals": {
            "warm_prepare_p50_le_0.5s": warm_p50 <= GOALS["warm_prepare_p50_s"],
            "land_p50_le_1s": land_p50 <= GOALS["land_p50_s"],
        },
        "machine": {"cpus": os.cpu_count(), "git": _git_version()},
        "generate_s": round(generate_s, 2),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(output, indent=2))


def _git_version() -> str:
    return subprocess.run(
        ["git", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()


if __name__ == "__main__":
    main()

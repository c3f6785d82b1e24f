"""Scheduling benchmark: how close a whole run gets to the DAG's lower bound.

Runs the real system — a private redis-server, the testbed GitHub and the scripted model
server (in this process), `baro-bot web`, `baro-bot worker` and R × `baro-bot runner` as
subprocesses — and submits plans of fixed shapes through the scripted planner. Every story is
a scripted agent that creates one file (`editor create`) and calls `finish`; its two turns'
latencies add up to a fixed work time T (heavy-tier stories: T × --heavy-factor). Each story
still runs its own test (`test -f <file>`) in the bubblewrap sandbox and is fetched, checked
out, committed and pushed to the testbed for real: that per-story machinery, plus the
orchestrator's dispatching, is the overhead measured here.

    uv run python bench/schedule.py                       # 3 runners, T = 3 s, shapes a,b,c
    uv run python bench/schedule.py --runners 4 --story-seconds 2 --shapes a,c --keep-logs

    # the issue's cases: 1 s per model call, three calls per story, default settings
    uv run python bench/schedule.py --story-seconds 3 --rounds 3 --heavy-factor 1 \
        --defaults --shapes anchor,two5,flat10,b,two12 [--verify-seconds 1.7]

Shapes (in `schedule_shapes.py`):

    a  "reservations", 10 stories, 4 levels (1/2/3/4), critical path of 4 stories
       (S1 enum → S2 entity → S6 mapper → S7 service); S2, S4 and S7 are heavy.
    b  24 stories, 6 levels (3/6/7/4/3/1), critical path of 6 stories
       (S1 → S5 → S10 → S17 → S21 → S24); S1, S8, S10 and S17 are heavy.
    c  100 stories: plans are capped at 25 stories (app/core/plan.py MAX_STORIES), so
       4 issues of one repository, each a wide 25-story plan (1 root → 23 in parallel →
       1 sink), are labelled at once and run concurrently: 4 roots, 92 parallel, 4 sinks.
    anchor  6 stories, S1-S3 independent, S4←S1, S5←S2, S6←S3 (the anchor run's shape)
    two5, flat10, two12  10 stories as 2 levels of 5 or flat; 24 as 2 levels of 12

`--verify-seconds V` gives the repository a `verify:` of V seconds: it runs inside every
story (on its critical path, so the bound counts it per story) and once more at the end
(`bound_final_s`). `ratio_dispatch` = wall_dispatch / bound, `ratio_label` = wall_label /
(bound + final verify); `github_writes_by_kind` counts the REST writes of the shape's
repository (git pushes and token mints excluded).

Slots: a runner process executes up to `max_jobs = 2` stories at once (runner/worker.py), so
R runners give 2R story slots; every bound uses slots = 2R. Per shape one JSON line is printed:

    bound_s          max(critical path, total work / slots) with the scripted latencies
    level_barrier_s  a schedule that waits for each level to finish (levels packed onto the
                     slots longest first; = Σ ceil(level size / slots) × T when uniform)
    ideal_list_s     a zero-overhead ready-set list schedule, critical path first (what the
                     scheduler could reach when the bound is not attainable)
    wall_dispatch_s  first story dispatched → last story landed (run record `started_at` /
                     `finished_at` in `baro:run:<id>`), the scheduler's own window
    wall_label_s     label delivered → run `finished` event (adds intake, planning, the PR)
    overhead_*_s     wall − bound, for both walls
    goal_met_*       the project goal, wall ≤ 1.10 × bound + 3 s (`goal_s`), for both walls;
                     the exit status is 0 when every shape meets it in the dispatch window

`steps_mean_s` says where a story's time goes (mean per story, seconds):

    gap_dep_landed_to_dispatch   its last dependency's `story_landed` → its `dispatched`
    queue_dispatch_to_pickup     `dispatched` → a runner starts the job (slot wait + arq poll)
    access (.token_mint)         installation token mint + repository lookup
    find_landed_fetch            the idempotency check's `git fetch`
    prepare_fetch_worktree       a second `git fetch` (when the first is stale) + the checkout
    agent_over_scripted          agent time beyond the scripted latencies (.model_over_…:
                                 HTTP to the model; .sandbox_tests: `test -f` under bwrap)
    land_commit_push             commit + push in the run's landing turn, merging onto
                                 siblings that landed first (.rebase, .rebases_per_story,
                                 .turn_wait: waiting in line for the landing turn)
    cleanup_worktree, transcript_record_notify, runner_other
    mirror_lock_wait / _held     the per-repository mirror lock (inside the steps above)
    landed_to_orchestrator_pickup  `story_landed` → the worker starts `story_finished`
    exec_over_T                  runner pickup → `story_landed`, minus the scripted time

`critical_chain` is the realised chain (from the story that landed last, back through the
dependency that released each story) with gap / queue / exec and every probed step's seconds
per link (`push` absent: another story's push took it along); `run_events_s` is the event
log of a single-run shape, seconds after the label; `slot_busy` is the
runners' job time over slots × wall; `bot_cpu_s` (per process in `cpu_by_process_s`),
`testbed_cpu_s`, `machine_cpu_busy` and `load_avg_1m_before` show whether CPU (ours or other
processes') limited the run. `in_flight` samples every active run's stories in flight from
the store's load table (one command, so one instant) against `BARO_MAX_STORIES_IN_FLIGHT`,
and how far each installation stays from its share while all of them have work. The
runner/worker steps come from timing probes this script wraps around their methods when it
starts those processes (`bench/schedule.py --probe runner|worker …` = `baro-bot
runner|worker` with the probes); nothing in the app is changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schedule_shapes import SHAPES, Shape, _script, _seconds, bounds  # noqa: E402

PROBE_DIR_ENV = "BENCH_PROBE_DIR"
GOAL_FACTOR = 1.10
GOAL_SLACK_S = 3.0
SLOTS_PER_RUNNER = 2  # runner/worker.py: max_jobs
DEFAULT_IN_FLIGHT = 16  # app/settings.py: max_stories_in_flight
SETTLE_S = 3.5  # longer than any gap between one run's spaced writes (2 × 1 s spacing)


# --- probes (run inside the bot's worker and runner processes) ---------------------------

_CURRENT: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "bench_story", default=(None, None)
)


class _ProbeLog:
    def __init__(self, path: Path) -> None:
        self.out = path.open("a", buffering=1)

    def emit(self, step: str, t0: float, t1: float) -> None:
        run, story = _CURRENT.get()
        self.out.write(
            json.dumps({"run": run, "story": story, "step": step, "t0": t0, "t1": t1}) + "\n"
        )


def _timed(
    log: _ProbeLog,
    owner: Any,
    name: str,
    step: str,
    key: Callable[..., tuple[str | None, str | None]] | None = None,
) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _CURRENT.set(key(*args, **kwargs)) if key else None
        t0 = time.time()
        try:
            return await original(*args, **kwargs)
        finally:
            log.emit(step, t0, time.time())
            if token is not None:
                _CURRENT.reset(token)

    setattr(owner, name, wrapper)


def _story_key(_self: Any, run_id: str, story_id: str, *_: Any, **__: Any) -> tuple[str, str]:
    return run_id, story_id


# (process, module, attribute path, step name, keyed by the story's run/story arguments)
PROBES: tuple[tuple[str, str, str, str, bool], ...] = (
    ("worker", "app.worker.orchestrator", "Orchestrator.story_finished", "story_finished", True),
    ("worker", "app.worker.orchestrator", "Orchestrator.dispatch", "dispatch", False),
    ("worker", "app.worker.orchestrator", "Orchestrator.render", "render", False),
    ("runner", "runner.story", "StoryRunner.run_story", "job", True),
    ("runner", "runner.story", "StoryRunner.access", "access", False),
    ("runner", "app.github", "GitHubGateway.repo_token", "mint", False),
    ("runner", "runner.workspace", "Workspaces.find_landed", "find_landed", False),
    ("runner", "runner.workspace", "Workspaces.prepare", "prepare", False),
    ("runner", "runner.mirror", "Mirror.fetch", "fetch", False),
    ("runner", "runner.agent", "StoryAgent.work", "agent", False),
    ("runner", "runner.agent", "StoryAgent._complete", "model", False),
    ("runner", "runner.agent", "StoryAgent.verify", "verify", False),
    ("runner", "runner.story", "StoryRunner._save_transcript", "transcript", False),
    ("runner", "runner.story", "_land", "land", False),
    ("runner", "runner.landing", "_commit", "commit", False),
    ("runner", "runner.landing", "_rebase", "rebase", False),
    ("runner", "runner.workspace", "cleanup", "cleanup", False),
    ("runner", "runner.story", "StoryRunner._record", "record", False),
    ("runner", "app.jobs", "Jobs.story_finished", "notify", False),
    ("runner", "app.store", "LandingTurn.acquire", "turn_wait", False),
    ("runner", "app.store", "LandingTurn.release", "turn_release", False),
    ("runner", "runner.landing", "_check_workflows", "workflows", False),
    ("runner", "runner.landing", "_story_commit", "story_commit", False),
    ("runner", "runner.mirror", "Mirror.has_commit", "has_commit", False),
)


def probe_targets(kind: str) -> list[tuple[Any, str, str, bool]]:
    """(owner, attribute, step, keyed) for one process; raises when the code moved on."""
    import importlib

    out = []
    for proc, module, path, step, keyed in PROBES:
        if proc != kind:
            continue
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        if not callable(getattr(owner, name, None)):
            raise AttributeError(f"bench probe {module}.{path} no longer exists")
        out.append((owner, name, step, keyed))
    return out


def _install_probes(kind: str) -> None:
    directory = os.environ.get(PROBE_DIR_ENV)
    if not directory or kind not in ("runner", "worker"):
        return
    log = _ProbeLog(Path(directory) / f"{kind}-{os.getpid()}.jsonl")
    for owner, name, step, keyed in probe_targets(kind):
        _timed(log, owner, name, step, _story_key if keyed else None)
    if kind == "worker":
        return
    from runner import mirror

    locked = mirror.Mirror.locked

    @contextlib.asynccontextmanager
    async def timed_locked(self: Any) -> AsyncIterator[None]:
        t0 = time.time()
        async with locked(self):
            t1 = time.time()
            log.emit("lock_wait", t0, t1)
            try:
                yield
            finally:
                log.emit("lock_held", t1, time.time())

    mirror.Mirror.locked = timed_locked  # type: ignore[method-assign]
    git = mirror.Mirror.git

    async def timed_git(self: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return await git(self, args, *rest, **kwargs)
        finally:
            if args and args[0] == "push":
                log.emit("push", t0, time.time())

    mirror.Mirror.git = timed_git  # type: ignore[method-assign]


def probe_main(argv: list[str]) -> int:
    """`baro-bot <kind> …` with timing probes installed first."""
    _install_probes(argv[0])
    from app.cli import main as cli_main

    return cli_main(argv)


# --- the run -------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _cpu(pids: list[int]) -> tuple[float, float, float, float]:
    """Machine busy and total ticks, then CPU seconds of the bot's processes (with their
    reaped children: git, bwrap) and of this process (testbed GitHub with its git
    children, scripted models)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    bot = sum(_proc_cpu(pid) for pid in pids)
    return sum(fields) - idle, sum(fields), bot, sum(os.times()[:4])


def _proc_cpu(pid: int) -> float:
    """CPU seconds of one process and its reaped children (0 once it is gone)."""
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in stat[11:15]) / os.sysconf("SC_CLK_TCK")
    return 0.0


@dataclass
class Outcome:
    run_ids: list[str]
    delivered_at: float
    records: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    machine_busy: float = 0.0
    bot_cpu_s: float = 0.0
    testbed_cpu_s: float = 0.0
    load_avg: float = 0.0
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    github_writes: dict[str, int] = field(default_factory=dict)
    labels: list[list[str]] = field(default_factory=list)
    write_times: list[tuple[float, str]] = field(default_factory=list)
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    in_flight: dict[str, Any] = field(default_factory=dict)


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """`wait_until`, ending the benchmark with a one-line reason instead of a traceback."""
    from testbed.waiting import TimedOut, wait_until

    try:
        return wait_until(check, timeout, what)
    except TimedOut as exc:
        raise SystemExit(f"bench: {exc}") from None


def _events(client: Any, run_id: str) -> list[dict[str, Any]]:
    out = []
    for _id, raw in client.xrange(f"baro:run:{run_id}:events"):
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        out.append({"kind": fields["kind"], "at": _ts(fields["at"]), **json.loads(fields["data"])})
    return out


class InFlightSampler:
    """Samples stories in flight, per installation, every `period` seconds in a thread."""

    def __init__(self, redis_url: str, period: float = 0.05) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.period = period
        self.samples: list[dict[int, tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def _loop(self) -> None:
        from app import keys
        from app.store import decode_load

        while not self._stop.wait(self.period):
            per: dict[int, tuple[int, int]] = {}
            # the store's load table: every active run's stories in flight, read in one
            # command (what the scheduler's cap must hold at every instant)
            for run_id, raw in self.client.hgetall(keys.RUN_LOADS).items():
                load = decode_load(run_id.decode(), raw.decode())
                if load.state in ("running", "finalizing", "ready", "planning", "queued"):
                    r, w = per.get(load.installation_id, (0, 0))
                    per[load.installation_id] = (
                        r + load.running,
                        w + load.running + load.pending,
                    )
            self.samples.append(per)

    def summary(self, cap: int, installations: int) -> dict[str, Any]:
        """Peak in flight against the cap; while every installation has more work than its
        share, how far each stays from the share (`BARO_MAX_STORIES_IN_FLIGHT` split evenly)."""
        share = cap // max(1, installations)
        peak = max((sum(r for r, _ in p.values()) for p in self.samples), default=0)
        contended = [
            p
            for p in self.samples
            if len(p) == installations and all(w >= share for _, w in p.values())
        ]
        off = [abs(r - share) for p in contended for r, _ in p.values()]
        return {
            "in_flight_cap": cap,
            "in_flight_peak": peak,
            "cap_held": peak <= cap,
            "samples": len(self.samples),
            "share": share,
            "contended_samples": len(contended),
            "share_max_deviation": max(off, default=None),
            "share_within_one": (sum(1 for d in off if d <= 1) / len(off)) if off else None,
        }


def run_shape(shape: Shape, ctx: Any, args: argparse.Namespace, index: int) -> Outcome:
    import redis

    from testbed.demo import github_writes

    world, bot, models = ctx["world"], ctx["bot"], ctx["models"]
    config = "review: false\n"  # the review phase is measured on its own, not here
    if args.verify_seconds:
        config += f"verify:\n  - sleep {args.verify_seconds:g}\n"
    files = {"README.md": f"# Benchmark {shape.name}\n", ".github/baro.yml": config}
    worlds = [world] + [
        dataclasses.replace(
            world,
            installation=ctx["state"].create_installation(world.app, f"bench-{index}-org{k}"),
            owner=f"bench-{index}-org{k}",
        )
        for k in range(1, shape.installations)
    ]
    repos = [w.new_repo(files) for w in worlds]
    titles = [
        f"Bench {index} {shape.name} issue {i + 1} of {shape.runs}" for i in range(shape.runs)
    ]
    where = [(worlds[i % len(worlds)], repos[i % len(worlds)]) for i in range(shape.runs)]
    issues = [
        w.new_issue(r, t, "Scheduling benchmark.") for (w, r), t in zip(where, titles, strict=True)
    ]
    repo = repos[0]
    models.set_script(_script(shape, titles, args.story_seconds, args.heavy_factor, args.rounds))
    client = redis.Redis.from_url(bot.env["BARO_REDIS_URL"])
    pids = [p.pid for p in bot.procs.values()]
    load = os.getloadavg()[0]
    busy0, total0, bot0, tb0 = _cpu(pids)
    per0 = {name: _proc_cpu(p.pid) for name, p in bot.procs.items()}

    async def label_all() -> None:
        for (w, r), issue in zip(where, issues, strict=True):
            resp = await w.deliver_label(bot, r, issue.number)
            if resp.status_code >= 300:
                raise SystemExit(f"bench: webhook refused: {resp.status_code} {resp.text}")

    sampler = InFlightSampler(bot.env["BARO_REDIS_URL"]).__enter__()
    delivered = time.time()
    asyncio.run(label_all())

    def run_ids() -> list[str] | None:
        keys = [
            f"baro:issue:{r.full_name.lower()}#{i.number}:active"
            for (_, r), i in zip(where, issues, strict=True)
        ]
        values: list[bytes | None] = [client.get(k) for k in keys]  # type: ignore[misc]
        return [v.decode() for v in values if v] if all(values) else None

    ids: list[str] = _wait(run_ids, 60, "the runs to be created")
    budget = 90 + 8 * _bounds(shape, args)["bound_final_s"]

    def all_finished() -> bool:
        if not all(any(e["kind"] == "finished" for e in _events(client, r)) for r in ids):
            return False
        # the final state label is the last write of a run
        labels = [
            set(ctx["state"].labels(r, i.number)) for (_, r), i in zip(where, issues, strict=True)
        ]
        return all("baro:running" not in ls and ls & {"baro:done", "baro:failed"} for ls in labels)

    _wait(all_finished, budget, f"shape {shape.key} to finish")
    sampler.__exit__()

    def settled() -> bool:
        """The runs' spaced writes (final comment, check run) are out: none for a while."""
        names = tuple(f"/repos/{r.full_name}/" for r in repos)
        log = [r for r in ctx["state"].request_log() if r.path.startswith(names)]
        writes = [r.started for r in log if r.method != "GET" and ".git/" not in r.path]
        return not writes or time.time() - max(writes) > SETTLE_S

    _wait(settled, 300, f"shape {shape.key}'s GitHub writes")
    busy1, total1, bot1, tb1 = _cpu(pids)
    per1 = {name: _proc_cpu(p.pid) for name, p in bot.procs.items()}
    outcome = Outcome(
        ids,
        delivered,
        machine_busy=(busy1 - busy0) / max(1, total1 - total0),
        bot_cpu_s=bot1 - bot0,
        testbed_cpu_s=tb1 - tb0,
        load_avg=load,
        cpu_by_process={name: round(per1[name] - per0.get(name, 0.0), 1) for name in per1},
    )
    for r in ids:
        raw: bytes | None = client.get(f"baro:run:{r}")  # type: ignore[assignment]
        outcome.records.append(json.loads(raw or b"{}"))
        outcome.events[r] = _events(client, r)
    client.close()
    outcome.github_writes = {}
    for r in repos:
        for kind, n in github_writes(ctx["state"], r.full_name).items():
            outcome.github_writes[kind] = outcome.github_writes.get(kind, 0) + n
    cap = int(bot.env.get("BARO_MAX_STORIES_IN_FLIGHT", DEFAULT_IN_FLIGHT))
    outcome.in_flight = sampler.summary(cap, shape.installations)
    outcome.write_times = [
        (round(r.started - delivered, 2), f"{r.method} {r.path.split('/', 4)[-1]}")
        for r in ctx["state"].request_log()
        if r.path.startswith(f"/repos/{repo.full_name}/")
        and r.method != "GET"
        and ".git/" not in r.path
    ]
    outcome.labels = [
        ctx["state"].labels(r, i.number) for (_, r), i in zip(where, issues, strict=True)
    ][:10]
    outcome.check_runs = [
        {
            "sha": c.head_sha[:8],
            "writes": [h.get("conclusion") or h.get("status") for h in c.history],
        }
        for c in ctx["state"].get_repo(repo).check_runs.values()
    ]
    return outcome


def _bounds(shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    return bounds(shape, args.slots, args.story_seconds, args.heavy_factor, args.verify_seconds)


def _probes(directory: Path, run_ids: set[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in directory.glob("*.jsonl"):
        kind = path.name.split("-", 1)[0]
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["run"] in run_ids:
                out.append({**entry, "proc": kind})
    return out


RUNNER_STEPS = ("access", "find_landed", "prepare", "agent", "transcript", "land", "cleanup")


def analyse(
    shape: Shape, outcome: Outcome, probes: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    b = _bounds(shape, args)
    nodes = {n.id: n for n in shape.nodes}
    stories: dict[str, dict[str, Any]] = {}
    states: dict[str, int] = {}
    finished_at: list[float] = []
    for rec, run_id in zip(outcome.records, outcome.run_ids, strict=True):
        events = outcome.events[run_id]
        finished_at += [e["at"] for e in events if e["kind"] == "finished"]
        for sid, s in rec.get("stories", {}).items():
            states[s["state"]] = states.get(s["state"], 0) + 1
            key = f"{run_id}:{sid}"
            dispatched = [
                e["at"] for e in events if e["kind"] == "dispatched" and e.get("story") == sid
            ]
            landed = [
                e["at"] for e in events if e["kind"] == "story_landed" and e.get("story") == sid
            ]
            stories[key] = {
                "run": run_id,
                "id": sid,
                "attempts": s["attempts"],
                "started": _ts(s["started_at"]),
                "finished": _ts(s["finished_at"]),
                "dispatched": dispatched[-1] if dispatched else None,
                "landed": landed[-1] if landed else None,
                "steps": {},
                "rebases": 0,
            }
    for p in probes:
        st = stories.get(f"{p['run']}:{p['story']}")
        if st is None:
            continue
        kind, dt = p["step"], p["t1"] - p["t0"]
        if kind in ("lock_wait", "lock_held"):
            st[kind] = st.get(kind, 0.0) + dt
        elif kind == "job":
            st["pickup"] = p["t0"]
            st["job_end"] = p["t1"]
            st["steps"]["job"] = st["steps"].get("job", 0.0) + dt
        elif kind == "story_finished" and p["proc"] == "worker":
            st.setdefault("sf_start", p["t0"])
            st["steps"]["story_finished"] = st["steps"].get("story_finished", 0.0) + dt
        else:
            st["steps"][kind] = st["steps"].get(kind, 0.0) + dt
            st["rebases"] += kind == "rebase"
    # per-story derived intervals
    for st in stories.values():
        node = nodes[st["id"]]
        work = _seconds(node, args.story_seconds, args.heavy_factor)
        s = st["steps"]
        releasers = [stories[f"{st['run']}:{d}"]["landed"] for d in node.deps]
        st["gap"] = (
            st["dispatched"] - max(releasers)
            if node.deps and st["dispatched"] and all(releasers)
            else None
        )
        st["queue"] = (
            st["pickup"] - st["dispatched"] if "pickup" in st and st["dispatched"] else None
        )
        st["model_extra"] = s.get("model", 0.0) - work
        st["agent_extra"] = s.get("agent", 0.0) - work
        inside = (
            sum(s.get(k, 0.0) for k in RUNNER_STEPS) + s.get("record", 0.0) + s.get("notify", 0.0)
        )
        st["runner_other"] = s.get("job", 0.0) - inside
        st["exec_overhead"] = (
            (st["landed"] - st["pickup"] - work) if st.get("pickup") and st["landed"] else None
        )

    def mean(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return round(sum(vals) / len(vals), 3) if vals else None

    lst = list(stories.values())

    def step(name: str, default: float | None = None) -> float | None:
        return mean([s["steps"].get(name, default) for s in lst])

    steps_mean = {
        "gap_dep_landed_to_dispatch": mean([s["gap"] for s in lst]),
        "queue_dispatch_to_pickup": mean([s["queue"] for s in lst]),
        "access": step("access"),
        "access.token_mint": step("mint"),
        "find_landed_fetch": step("find_landed"),
        "prepare_fetch_worktree": step("prepare"),
        "agent_over_scripted": mean([s["agent_extra"] for s in lst]),
        "agent.model_over_scripted": mean([s["model_extra"] for s in lst]),
        "agent.sandbox_tests": step("verify"),
        "land_commit_push": step("land"),
        "land.rebase": step("rebase", 0.0),
        "land.rebases_per_story": mean([s["rebases"] for s in lst]),
        "land.turn_wait": step("turn_wait", 0.0),
        "cleanup_worktree": step("cleanup"),
        "transcript_record_notify": mean(
            [sum(s["steps"].get(k, 0.0) for k in ("transcript", "record", "notify")) for s in lst]
        ),
        "runner_other": mean([s["runner_other"] for s in lst]),
        "mirror_lock_wait": mean([s.get("lock_wait", 0.0) for s in lst]),
        "mirror_lock_held": mean([s.get("lock_held", 0.0) for s in lst]),
        "landed_to_orchestrator_pickup": mean(
            [s["sf_start"] - s["landed"] if "sf_start" in s and s["landed"] else None for s in lst]
        ),
        "exec_over_T": mean([s["exec_overhead"] for s in lst]),
    }
    # the realised critical chain: from the story that landed last, back through the
    # dependency that released it
    chain: list[dict[str, Any]] = []
    cur = max(lst, key=lambda s: s["landed"] or 0.0) if lst else None
    while cur is not None:
        chain.append(
            {
                "story": cur["id"],
                "gap": _r(cur["gap"]),
                "queue": _r(cur["queue"]),
                "exec": _r((cur["landed"] or 0) - cur["pickup"]) if "pickup" in cur else None,
                "steps": {k: round(v, 3) for k, v in cur["steps"].items()},
            }
        )
        deps = [stories[f"{cur['run']}:{d}"] for d in nodes[cur["id"]].deps]
        cur = max(deps, key=lambda s: s["landed"] or 0.0) if deps else None
    chain.reverse()
    first_dispatch = min((s["started"] for s in lst if s["started"]), default=None)
    last_landed = max((s["finished"] for s in lst if s["finished"]), default=None)
    wall_dispatch = (last_landed - first_dispatch) if first_dispatch and last_landed else None
    wall_label = (max(finished_at) - outcome.delivered_at) if finished_at else None
    job_time = sum(s["steps"].get("job", 0.0) for s in lst)
    goal = GOAL_FACTOR * b["bound_s"] + GOAL_SLACK_S
    return {
        "shape": shape.key,
        "name": shape.name,
        "stories": len(lst),
        "runs": len(outcome.run_ids),
        "runners": args.runners,
        "slots": args.slots,
        "story_seconds": args.story_seconds,
        "heavy_factor": args.heavy_factor,
        "states": states,
        "run_states": [r.get("state") for r in outcome.records],
        "attempts": sum(s["attempts"] for s in lst),
        "retries": sum(
            1 for evs in outcome.events.values() for e in evs if e["kind"] in ("retry", "gave_up")
        ),
        **b,
        "wall_dispatch_s": _r(wall_dispatch),
        "ratio_dispatch": _ratio(wall_dispatch, b["bound_final_s"] - b["verify_s"]),
        "ratio_label": _ratio(wall_label, b["bound_final_s"]),
        "wall_label_s": _r(wall_label),
        "overhead_dispatch_s": _r(wall_dispatch - b["bound_s"]) if wall_dispatch else None,
        "overhead_label_s": _r(wall_label - b["bound_s"]) if wall_label else None,
        "label_to_first_dispatch_s": _r(first_dispatch - outcome.delivered_at)
        if first_dispatch
        else None,
        "last_landed_to_done_s": _r(max(finished_at) - last_landed)
        if finished_at and last_landed
        else None,
        "slot_busy": round(job_time / (args.slots * wall_dispatch), 2) if wall_dispatch else None,
        "goal_s": round(goal, 2),
        "goal_met_dispatch": bool(wall_dispatch is not None and wall_dispatch <= goal),
        "goal_met_label": bool(wall_label is not None and wall_label <= goal),
        "machine_cpu_busy": round(outcome.machine_busy, 2),
        "bot_cpu_s": round(outcome.bot_cpu_s, 1),
        "cpu_by_process_s": outcome.cpu_by_process,
        "testbed_cpu_s": round(outcome.testbed_cpu_s, 1),
        "cores": os.cpu_count(),
        "load_avg_1m_before": round(outcome.load_avg, 2),
        "github_writes": sum(outcome.github_writes.values()),
        "github_writes_by_kind": outcome.github_writes,
        "issue_labels": outcome.labels,
        "github_write_times_s": outcome.write_times,
        "check_runs": outcome.check_runs[:12],
        "in_flight": outcome.in_flight,
        "github_writes_per_run": round(
            sum(outcome.github_writes.values()) / len(outcome.run_ids), 1
        ),
        "run_phases_s": {
            kind: round(min(at) - outcome.delivered_at, 2)
            for kind in ("planned", "running", "dispatched", "finished")
            if (at := [e["at"] for es in outcome.events.values() for e in es if e["kind"] == kind])
        },
        "steps_mean_s": steps_mean,
        "critical_chain": chain,
        "run_events_s": [
            [round(e["at"] - outcome.delivered_at, 3), e["kind"], e.get("story")]
            for e in outcome.events[outcome.run_ids[0]]
        ]
        if len(outcome.run_ids) == 1
        else None,
    }


def _ratio(wall: float | None, bound: float) -> float | None:
    return round(wall / bound, 3) if wall is not None and bound > 0 else None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@contextlib.contextmanager
def system(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """redis, testbed GitHub, scripted models, web + worker + R runners (with probes)."""
    from testbed.demo import private_redis
    from testbed.github.server import running_testbed
    from testbed.github.state import GitHubState
    from testbed.models.harness import running_model_server
    from tests.e2e.harness import Bot, World, bot_env, new_bot

    class ProbedBot(Bot):
        def start(self, name: str, *extra: str) -> None:
            kind = name.split("-", 1)[0]
            with (self.log_dir / f"{name}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--probe", kind, *extra],
                    env=self.env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    probe_dir = Path(tempfile.mkdtemp(prefix="baro-bench-probes-"))
    with (
        private_redis() as redis_url,
        GitHubState() as state,
        running_testbed(state) as testbed,
        running_model_server({"rules": []}) as models,
    ):
        app = state.create_app("baro-bench")
        installation = state.create_installation(app, "bench-org")
        world = World(testbed, app, installation, owner="bench-org")
        tuned = (
            {}
            if args.defaults
            else {
                "BARO_MAX_PARALLEL": "32",
                "BARO_MAX_STORIES_IN_FLIGHT": "256",
                "BARO_GITHUB_WRITE_SPACING": "0",
            }
        )
        env = bot_env(
            testbed,
            app,
            redis_url,
            models.url,
            BARO_RUN_BUDGET_USD="100",
            **tuned,
            **{PROBE_DIR_ENV: str(probe_dir)},
        )
        if args.defaults:  # the test harness turns write spacing off; production does not
            env.pop("BARO_GITHUB_WRITE_SPACING", None)
        plain = new_bot(env)
        bot = ProbedBot(env=plain.env, web_url=plain.web_url, log_dir=plain.log_dir)
        bot.start_all(runners=args.runners)
        try:
            names = [n for n in bot.procs if n.startswith("runner")]

            def runners_ready() -> bool:
                for n in names:
                    if bot.procs[n].poll() is not None:
                        raise SystemExit(f"bench: {n} exited:\n{bot.logs(n)[-3000:]}")
                return all("ready (sandbox" in bot.logs(n) for n in names)

            _wait(runners_ready, 60, "the runners")
            yield {
                "world": world,
                "bot": bot,
                "models": models,
                "probe_dir": probe_dir,
                "state": state,
            }
        finally:
            bot.stop()
            if args.keep_logs:
                _say(f"logs: {bot.log_dir}  probes: {probe_dir}")
            else:
                shutil.rmtree(bot.log_dir, ignore_errors=True)
                shutil.rmtree(probe_dir, ignore_errors=True)
            shutil.rmtree(env["BARO_RUNNER_DATA_DIR"], ignore_errors=True)
            shutil.rmtree(Path(env["BARO_GITHUB_PRIVATE_KEY_FILE"]).parent, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        return probe_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runners", type=int, default=3, help="runner processes (2 slots each)")
    parser.add_argument("--story-seconds", type=float, default=3.0, help="work time T per story")
    parser.add_argument("--heavy-factor", type=float, default=2.0, help="heavy story = T × this")
    parser.add_argument("--rounds", type=int, default=2, help="model calls per story (≥ 2)")
    parser.add_argument(
        "--verify-seconds", type=float, default=0.0, help="a repository `verify:` of this length"
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="the server's default settings (max_parallel, write spacing) instead of wide ones",
    )
    parser.add_argument(
        "--shapes", default="a,b,c", help=f"comma-separated, of: {', '.join(SHAPES)}"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep process logs and probes")
    args = parser.parse_args()
    args.slots = args.runners * SLOTS_PER_RUNNER
    shapes = [SHAPES[k.strip()] for k in args.shapes.split(",") if k.strip()]
    started = time.monotonic()
    results = []
    with system(args) as ctx:
        _say(
            f"bench: up after {time.monotonic() - started:.1f}s ({args.runners} runners × 2 slots)"
        )
        for i, shape in enumerate(shapes):
            outcome = run_shape(shape, ctx, args, i)
            probes = _probes(ctx["probe_dir"], set(outcome.run_ids))
            result = analyse(shape, outcome, probes, args)
            results.append(result)
            print(json.dumps(result), flush=True)
            _say(
                f"bench: {shape.name}: dispatch→landed {result['wall_dispatch_s']}s "
                f"(× {result['ratio_dispatch']} of the bound), label→done "
                f"{result['wall_label_s']}s (× {result['ratio_label']} of bound + final verify), "
                f"{result['github_writes']} GitHub writes, "
                f"bound {result['bound_s']}s, "
                f"level barrier {result['level_barrier_s']}s, goal ≤ {result['goal_s']}s: "
                f"{'met' if result['goal_met_dispatch'] else 'MISSED'} (dispatch window), "
                f"{'met' if result['goal_met_label'] else 'MISSED'} (label→done)"
            )
    _say(f"bench: total {time.monotonic() - started:.1f}s")
    return 0 if all(r["goal_met_dispatch"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Metrics of all processes, kept in Redis and rendered as Prometheus text by the web process.

The web, worker and runner processes run on different machines and only the web process
serves HTTP, so every process records into Redis (one small MULTI per fact) and `GET /metrics`
reads Redis and renders a fresh registry per scrape. Counters and histogram buckets are
HINCRBYFLOATs into one hash per metric (field: the canonical label encoding), gauges carry
the time they were set, and each runner keeps a presence key with a TTL alive.

Recording never breaks the bot: a Redis error is logged at debug level and swallowed. An
increment that could not reach Redis at all (connection refused) is kept in the process and
sent with the next write, so an outage does not lose e.g. the deliveries refused during it.

Each fact is recorded where it becomes true, exactly once: story and run outcomes from the
run store's compare-and-set transitions (a re-run job cannot apply a transition twice), model
usage per completed call, queue wait when a runner claims a story's lease.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, get_args

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app import keys
from app.core.plan import RunState
from app.core.run import TERMINAL_STATES, Run, StoryRecord
from app.llm.types import Usage

log = logging.getLogger(__name__)

GAUGE_MAX_AGE_SECONDS = 3600.0
"""A gauge not set for this long is not shown (GitHub's rate-limit window is an hour)."""
MAX_UNSAVED = 10_000
"""Increments kept in memory while Redis is unreachable (label sets are bounded anyway)."""
_SEP = "|"
"""Between the label encoding and a histogram field's suffix (never inside the suffix)."""

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class Spec:
    """A stored metric: its Redis hash, exposed name (`baro_` prefix) and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return keys.metric(self.kind, self.name)

    @property
    def exposed(self) -> str:
        """Counters get `_total` from prometheus_client."""
        return f"baro_{self.name}"

    def field(self, labels: Mapping[str, str]) -> str:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return encode_labels(labels)


DELIVERIES = Spec(
    "webhook_deliveries",
    "counter",
    "Webhook deliveries by event and outcome (queued, duplicate, ignored, ping, bad_signature, "
    "malformed, too_large, queue_unavailable, disconnected, error).",
    ("event", "outcome"),
)
RUNS_FINISHED = Spec(
    "runs_finished", "counter", "Runs that reached a final state, by state.", ("state",)
)
STORIES = Spec(
    "stories",
    "counter",
    "Stories that ended, by outcome (landed, failed, cancelled, blocked) and tier.",
    ("outcome", "tier"),
)
STORY_RETRIES = Spec(
    "story_retries",
    "counter",
    "Failed story attempts that were retried, by tier and failure kind.",
    ("tier", "failure"),
)
MODEL_CALLS = Spec("model_calls", "counter", "Completed model calls, by model.", ("model",))
MODEL_TOKENS = Spec(
    "model_tokens",
    "counter",
    "Model tokens by model and kind (input: prompt not read from cache, cache writes "
    "included; cached: cache reads; output: reasoning included).",
    ("model", "kind"),
)
MODEL_COST = Spec(
    "model_cost_dollars",
    "counter",
    "Model spending in dollars, by model (calls without a known price are not included).",
    ("model",),
)
MODEL_UNPRICED = Spec(
    "model_calls_unpriced",
    "counter",
    "Model calls whose price is unknown (their cost is missing from the dollars).",
    ("model",),
)
STORY_DURATION = Spec(
    "story_duration_seconds",
    "histogram",
    "Story attempts that ended, from dispatch to result (as the tracking comment shows it).",
    ("outcome", "tier"),
    (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
)
QUEUE_WAIT = Spec(
    "story_queue_wait_seconds",
    "histogram",
    "Time from a story's dispatch until a runner started it, by tier.",
    ("tier",),
    (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
RATE_LIMIT = Spec(
    "github_rate_limit_remaining",
    "gauge",
    "GitHub API requests left in the current window, from the latest response's "
    "x-ratelimit-remaining, by installation and resource (core, graphql, …).",
    ("installation", "resource"),
)
STORED: tuple[Spec, ...] = (
    DELIVERIES,
    RUNS_FINISHED,
    STORIES,
    STORY_RETRIES,
    MODEL_CALLS,
    MODEL_TOKENS,
    MODEL_COST,
    MODEL_UNPRICED,
    STORY_DURATION,
    QUEUE_WAIT,
    RATE_LIMIT,
)
ACTIVE_RUN_STATES: tuple[RunState, ...] = tuple(
    state for state in get_args(RunState) if state not in TERMINAL_STATES
)


# --- pure helpers ---------------------------------------------------------------------------


def encode_labels(labels: Mapping[str, str]) -> str:
    """One canonical hash field per label set: sorted compact JSON (any value is safe)."""
    return json.dumps(
        {k: str(labels[k]) for k in sorted(labels)}, separators=(",", ":"), ensure_ascii=False
    )


def decode_labels(raw: str | bytes) -> dict[str, str]:
    """The inverse of `encode_labels`; ValueError for anything it could not have written."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    value = json.loads(text)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"not a label encoding: {text[:80]!r}")
    return value


def bucket_for(value: float, bounds: Sequence[float]) -> float:
    """The smallest bound that holds `value` (Prometheus `le`), or +Inf."""
    for bound in sorted(bounds):
        if value <= bound:
            return float(bound)
    return math.inf


def bound_text(bound: float) -> str:
    """A bucket bound as Prometheus writes `le` (`30.0`, `+Inf`)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def cumulative(
    counts: Mapping[float, float], bounds: Sequence[float], total: float
) -> list[tuple[str, float]]:
    """Stored per-bucket counts → Prometheus's cumulative buckets, ending with +Inf.

    A stored bound that is not (or no longer) a configured one counts towards every
    configured bound above it, so changing the buckets never breaks a histogram."""
    out: list[tuple[str, float]] = []
    for bound in sorted(bounds):
        out.append((bound_text(bound), sum(n for b, n in counts.items() if b <= bound)))
    out.append(("+Inf", total))
    return out


@dataclass(frozen=True)
class StoryEnd:
    outcome: str
    tier: str
    duration_s: float | None


@dataclass(frozen=True)
class Transitions:
    """What one accepted run-store write made true."""

    run_finished: str | None = None
    story_ends: tuple[StoryEnd, ...] = ()
    retries: tuple[tuple[str, str], ...] = ()
    """(tier, failure kind) of failed attempts that go back to pending."""


def _tier(run: Run, story_id: str) -> str:
    if run.plan is None:
        return "unknown"
    try:
        return run.plan.story(story_id).tier
    except KeyError:
        return "unknown"


def transitions(before: Run, after: Run) -> Transitions:
    """The outcomes that the write `before` → `after` made true (pure).

    A story ends when it lands, when its failure is final (the orchestrator decided not to
    retry: `awaiting_decision` cleared), or when it is blocked or cancelled while pending.
    A runner's report of a failure is not an end yet: the orchestrator may retry it."""
    finished = (
        after.state
        if after.state in TERMINAL_STATES and before.state not in TERMINAL_STATES
        else None
    )
    ends: list[StoryEnd] = []
    retries: list[tuple[str, str]] = []
    for sid, a in after.stories.items():
        b = before.stories.get(sid, StoryRecord())
        tier = _tier(after, sid)
        if a.state == "landed" and b.state != "landed":
            ends.append(StoryEnd("landed", tier, a.duration_s))
        elif (
            a.state == "failed"
            and not a.awaiting_decision
            and (b.state != "failed" or b.awaiting_decision)
        ):
            outcome = "cancelled" if a.failure_kind == "cancelled" else "failed"
            ends.append(StoryEnd(outcome, tier, a.duration_s))
        elif a.state in ("blocked", "cancelled") and b.state != a.state:
            ends.append(StoryEnd(a.state, tier, None))
        elif a.state == "pending" and b.state == "failed" and b.awaiting_decision:
            retries.append((tier, b.failure_kind or "execution"))
    return Transitions(finished, tuple(ends), tuple(retries))


# --- recording ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Incr:
    key: str
    field: str
    amount: float


@dataclass(frozen=True)
class _Put:
    key: str
    field: str
    value: str


@dataclass(frozen=True)
class _Remove:
    key: str
    field: str


_Op = _Incr | _Put | _Remove


def counter_ops(spec: Spec, amount: float, labels: Mapping[str, str]) -> list[_Op]:
    return [_Incr(spec.key, spec.field(labels), amount)]


def histogram_ops(spec: Spec, value: float, labels: Mapping[str, str]) -> list[_Op]:
    """Per label set: a (non-cumulative) count in the value's bucket, the sum and count."""
    enc = spec.field(labels)
    bound = bound_text(bucket_for(value, spec.buckets))
    return [
        _Incr(spec.key, f"{enc}{_SEP}{bound}", 1),
        _Incr(spec.key, f"{enc}{_SEP}sum", value),
        _Incr(spec.key, f"{enc}{_SEP}count", 1),
    ]


class Metrics:
    """Records metrics into Redis for any process; see the module docstring."""

    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock
        self._unsaved: dict[tuple[str, str], float] = {}

    # The facts, each recorded at the one place it becomes true.

    async def delivery(self, event: str, outcome: str) -> None:
        await self._write(counter_ops(DELIVERIES, 1, {"event": event, "outcome": outcome}))

    async def model_call(self, model: str, usage: Usage, cost: Decimal | None) -> None:
        def tokens(kind: str, n: int) -> list[_Op]:
            return counter_ops(MODEL_TOKENS, n, {"model": model, "kind": kind})

        ops = [
            *counter_ops(MODEL_CALLS, 1, {"model": model}),
            *tokens("input", usage.uncached_input + usage.cache_write),
            *tokens("cached", usage.cache_read),
            *tokens("output", usage.output),
        ]
        if cost is None:
            ops += counter_ops(MODEL_UNPRICED, 1, {"model": model})
        else:
            ops += counter_ops(MODEL_COST, float(cost), {"model": model})
        await self._write(ops)

    async def story_started(self, tier: str, queue_wait_s: float) -> None:
        await self._write(histogram_ops(QUEUE_WAIT, max(0.0, queue_wait_s), {"tier": tier}))

    async def run_changed(self, before: Run, after: Run) -> None:
        """Called by the run store after it accepted the write `before` → `after`."""
        try:
            found = transitions(before, after)
        except Exception:  # a bug here must not fail the write that already happened
            log.warning("could not derive metrics from a run update", exc_info=True)
            return
        ops: list[_Op] = []
        if found.run_finished is not None:
            ops += counter_ops(RUNS_FINISHED, 1, {"state": found.run_finished})
        for end in found.story_ends:
            labels = {"outcome": end.outcome, "tier": end.tier}
            ops += counter_ops(STORIES, 1, labels)
            if end.duration_s is not None:
                ops += histogram_ops(STORY_DURATION, max(0.0, end.duration_s), labels)
        for tier, failure in found.retries:
            ops += counter_ops(STORY_RETRIES, 1, {"tier": tier, "failure": failure})
        if ops:
            await self._write(ops)

    async def rate_limit(self, installation: int, resource: str, remaining: float) -> None:
        enc = RATE_LIMIT.field({"installation": str(installation), "resource": resource})
        await self._write([_Put(RATE_LIMIT.key, enc, json.dumps([remaining, self.clock()]))])

    async def runner_alive(self, runner_id: str, slots: int, busy: int, ttl_s: int) -> None:
        expires = self.clock() + ttl_s
        value = json.dumps({"slots": slots, "busy": busy, "expires": expires})
        await self._write([_Put(keys.RUNNERS, runner_id, value)])

    async def runner_gone(self, runner_id: str) -> None:
        await self._write([_Remove(keys.RUNNERS, runner_id)])

    async def flush(self) -> None:
        """Send increments kept during an outage (the web process does this per scrape)."""
        await self._write([])

    # Writing.

    async def _write(self, ops: Sequence[_Op]) -> None:
        """One round trip (MULTI), increments kept from an outage first; never raises."""
        unsaved, self._unsaved = self._unsaved, {}
        if not ops and not unsaved:
            return
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for (key, name), amount in unsaved.items():
                    pipe.hincrbyfloat(key, name, amount)
                for op in ops:
                    if isinstance(op, _Incr):
                        pipe.hincrbyfloat(op.key, op.field, op.amount)
                    elif isinstance(op, _Put):
                        pipe.hset(op.key, op.field, op.value)
                    else:
                        pipe.hdel(op.key, op.field)
                await pipe.execute()
        except RedisConnectionError as exc:
            # Most likely never sent (Redis down): keep the increments for the next write.
            self._keep(unsaved.items())
            self._keep(((op.key, op.field), op.amount) for op in ops if isinstance(op, _Incr))
            log.debug("metrics kept in memory, Redis unreachable: %s", exc)
        except Exception as exc:  # metrics must never break the bot
            log.debug("metrics not recorded: %s: %s", type(exc).__name__, exc)

    def _keep(self, items: Iterable[tuple[tuple[str, str], float]]) -> None:
        for slot, amount in items:
            if slot in self._unsaved or len(self._unsaved) < MAX_UNSAVED:
                self._unsaved[slot] = self._unsaved.get(slot, 0.0) + amount

    def response_hook(self, installation: int) -> Callable[[Any], Any]:
        """An httpx response hook recording GitHub's rate-limit headers for an installation."""

        async def hook(response: Any) -> None:
            headers = response.headers
            remaining = headers.get("x-ratelimit-remaining")
            if remaining is None:
                return
            try:
                value = float(remaining)
            except ValueError:
                return
            resource = headers.get("x-ratelimit-resource") or "core"
            await self.rate_limit(installation, resource, value)

        return hook


# --- reading and rendering ------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerInfo:
    slots: int
    busy: int


@dataclass
class Snapshot:
    """Everything /metrics shows, read from Redis at one moment."""

    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    """Spec name → field → value, as stored."""
    runners: list[RunnerInfo] = field(default_factory=list)
    run_states: dict[str, int] = field(default_factory=dict)
    at: float = 0.0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_snapshot(
    metrics: Metrics, active_runs: Callable[[], Awaitable[list[Run]]]
) -> Snapshot:
    """A handful of round trips; Redis errors propagate (the caller answers 503)."""
    await metrics.flush()
    redis = metrics.redis
    async with redis.pipeline(transaction=False) as pipe:
        for spec in STORED:
            pipe.hgetall(spec.key)
        stored = await pipe.execute()
    hashes = {
        spec.name: {_text(k): _text(v) for k, v in raw.items()}
        for spec, raw in zip(STORED, stored, strict=True)
    }
    runners: list[RunnerInfo] = []
    gone: list[str] = []
    for runner_id, raw in (await redis.hgetall(keys.RUNNERS)).items():  # type: ignore[misc]
        try:
            data = json.loads(raw)
            if float(data["expires"]) < metrics.clock():
                gone.append(_text(runner_id))  # died without saying goodbye
                continue
            runners.append(RunnerInfo(int(data["slots"]), int(data["busy"])))
        except (ValueError, KeyError, TypeError):
            log.debug("ignoring a malformed runner presence: %r", raw)
            gone.append(_text(runner_id))
    if gone:
        await redis.hdel(keys.RUNNERS, *gone)  # type: ignore[misc]
    states: dict[str, int] = defaultdict(int)
    for run in await active_runs():
        states[run.state] += 1
    return Snapshot(hashes, runners, dict(states), metrics.clock())


def _labelled(spec: Spec, stored: Mapping[str, str]) -> Iterator[tuple[list[str], str, str]]:
    """(label values in the spec's order, field suffix or "", value) of stored fields."""
    for name, value in stored.items():
        enc, _, suffix = name.rpartition(_SEP) if spec.kind == "histogram" else (name, "", "")
        try:
            labels = decode_labels(enc)
        except ValueError:
            log.debug("ignoring field %r of %s", name, spec.name)
            continue
        if set(labels) != set(spec.labels):
            continue
        yield [labels[n] for n in spec.labels], suffix, value


def _counter(spec: Spec, stored: Mapping[str, str]) -> Metric:
    family = CounterMetricFamily(spec.exposed, spec.help, labels=spec.labels)
    for values, _, value in _labelled(spec, stored):
        family.add_metric(values, float(value))
    return family


def _histogram(spec: Spec, stored: Mapping[str, str]) -> Metric:
    family = HistogramMetricFamily(spec.exposed, spec.help, labels=spec.labels)
    series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for values, suffix, value in _labelled(spec, stored):
        series[tuple(values)][suffix] = float(value)
    for key, parts in sorted(series.items()):
        counts = {
            float(k): n for k, n in parts.items() if k not in ("sum", "count") and _is_bound(k)
        }
        total = parts.get("count", sum(counts.values()))
        family.add_metric(list(key), cumulative(counts, spec.buckets, total), parts.get("sum", 0.0))
    return family


def _is_bound(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _gauge(spec: Spec, stored: Mapping[str, str], at: float) -> Metric:
    family = GaugeMetricFamily(spec.exposed, spec.help, labels=spec.labels)
    for values, _, raw in _labelled(spec, stored):
        try:
            value, set_at = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if at - float(set_at) <= GAUGE_MAX_AGE_SECONDS:
            family.add_metric(values, float(value))
    return family


def families(snapshot: Snapshot) -> list[Metric]:
    """The metric families of a snapshot (pure)."""
    out: list[Metric] = []
    for spec in STORED:
        stored = snapshot.hashes.get(spec.name, {})
        if spec.kind == "counter":
            out.append(_counter(spec, stored))
        elif spec.kind == "histogram":
            out.append(_histogram(spec, stored))
        else:
            out.append(_gauge(spec, stored, snapshot.at))
    runs = GaugeMetricFamily("baro_runs", "Runs not yet finished, by state.", labels=["state"])
    for state in ACTIVE_RUN_STATES:
        runs.add_metric([state], snapshot.run_states.get(state, 0))
    out.append(runs)
    live = snapshot.runners
    for name, help_, value in (
        ("baro_runners", "Live runner processes.", len(live)),
        ("baro_runners_busy", "Runner processes with a job in progress.", _busy(live)),
        ("baro_runner_slots", "Job slots of all live runners.", sum(r.slots for r in live)),
        ("baro_runner_slots_busy", "Job slots in use.", sum(r.busy for r in live)),
    ):
        out.append(GaugeMetricFamily(name, help_, value=value))
    return out


def _busy(runners: Iterable[RunnerInfo]) -> int:
    return sum(1 for r in runners if r.busy > 0)


class _SnapshotCollector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return families(self.snapshot)


def render(snapshot: Snapshot) -> bytes:
    """Prometheus text format, from a fresh registry (nothing is kept between scrapes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)

"""Durable run state in Redis: records, one active run per issue, an event log.

Writes are compare-and-set on the record's `version` (WATCH/MULTI), so a job that arq runs
twice cannot apply the same transition twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from app import keys
from app.core.check_run import CheckRef
from app.core.debounce import edit_window
from app.core.run import Run, now
from app.core.scheduler import RunLoad, back_to_work, max_parallel_of, set_landing
from app.landing_turn import BRANCH_HEAD_TTL, LandingTurn, read_head
from app.metrics import Metrics

log = logging.getLogger(__name__)

RENDER_EDITS_TTL = 7 * 24 * 3600
"""The edit count of a run's comment outlives any run (a stalled run ends within hours)."""


class RunNotFound(KeyError):
    pass


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_START = """
local current = redis.call('get', KEYS[1])
if current == false or current == ARGV[1] or current == ARGV[2] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if redis.call('set', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[4]) then
    return 2
  end
  return 1
end
return 0
"""
ATTEMPT_MARK_TTL = 7 * 24 * 3600
"""Outlives any run: the marker only has to be there while a job could be delivered again."""

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_CLAIM = """
local current = redis.call('get', KEYS[1])
if current == false or current == ARGV[1] or current == ARGV[2] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_QUEUE = """
local current = redis.call('get', KEYS[1])
local older = current and string.sub(current, 1, 7) == 'queued:'
  and (tonumber(string.sub(current, 8)) or 0) <= tonumber(ARGV[3])
if current == false or older then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def encode_load(load: RunLoad) -> str:
    return f"{load.installation_id}:{load.state}:{load.running}:{load.pending}"


def decode_load(run_id: str, text: str) -> RunLoad:
    installation, state, running, pending = text.split(":")
    return RunLoad(run_id, int(installation), state, int(running), int(pending))


class RunStore:
    def __init__(self, redis: Redis, metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.metrics = metrics if metrics is not None else Metrics(redis)
        """Told of every accepted write, so outcomes are counted once (see app/metrics.py)."""
        self._dispatch_turn = asyncio.Lock()

    @staticmethod
    def _key(run_id: str) -> str:
        return keys.run(run_id)

    @staticmethod
    def _active_key(issue_key: str) -> str:
        return keys.issue_active(issue_key)

    async def create(self, run: Run) -> tuple[Run, bool]:
        """Store a new run; if it already exists, return the stored one and False."""
        created = await self.redis.set(self._key(run.id), run.model_dump_json(), nx=True)
        if created:
            await self.redis.hset(keys.RUN_LOADS, run.id, encode_load(RunLoad.of(run)))  # type: ignore[misc]
            await self.redis.sadd(keys.ACTIVE_RUNS, run.id)  # type: ignore[misc]
            await self.append_event(run.id, "created", state=run.state)
            return run, True
        return await self.get(run.id), False

    async def get(self, run_id: str) -> Run:
        raw = await self.redis.get(self._key(run_id))
        if raw is None:
            raise RunNotFound(run_id)
        return Run.model_validate_json(raw)

    async def find(self, run_id: str) -> Run | None:
        try:
            return await self.get(run_id)
        except RunNotFound:
            return None

    async def update(self, run_id: str, change: Callable[[Run], Run | None]) -> Run:
        """Apply `change` atomically; it returns the new run, or None for no change."""
        key = self._key(run_id)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise RunNotFound(run_id)
                    current = Run.model_validate_json(raw)
                    changed = change(current.model_copy(deep=True))
                    if changed is None:
                        return current
                    changed = changed.model_copy(
                        update={"version": current.version + 1, "updated_at": now()}
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, changed.model_dump_json())
                    if changed.terminal:
                        pipe.srem(keys.ACTIVE_RUNS, run_id)
                        pipe.hdel(keys.RUN_LOADS, run_id)
                    else:
                        pipe.hset(keys.RUN_LOADS, run_id, encode_load(RunLoad.of(changed)))
                    await pipe.execute()
                    await self.metrics.run_changed(current, changed)
                    return changed
                except WatchError:
                    continue

    async def active_runs(self) -> list[Run]:
        """Runs not yet in a terminal state (for the reaper)."""
        ids = await self.redis.smembers(keys.ACTIVE_RUNS)  # type: ignore[misc]
        runs = []
        for raw in sorted(ids):
            run = await self.find(_text(raw))
            if run is not None and not run.terminal:
                runs.append(run)
        return runs

    async def claim_issue(self, issue_key: str, run_id: str) -> str:
        """Make `run_id` the issue's active run unless another holds it; returns the holder."""
        return await self._claim(self._active_key(issue_key), run_id)

    async def claim_branch(self, owner: str, repo: str, branch: str, run_id: str) -> str:
        """Make `run_id` the one run pushing to `branch` unless an unfinished run does (a
        follow-up on the PR and a retry or a new run on the issue share the branch)."""
        key = keys.branch_claim(owner, repo, branch)
        return await self._claim(key, run_id)

    async def _claim(self, key: str, run_id: str) -> str:
        """`key` names its holder run; a finished or vanished holder is taken over."""
        while True:
            if await self.redis.set(key, run_id, nx=True):
                return run_id
            holder = await self.redis.get(key)
            if holder is None:
                continue
            holder_id = _text(holder)
            if holder_id == run_id:
                return run_id
            other = await self.find(holder_id)
            if other is not None and not other.terminal:
                return holder_id
            # The holder finished (or vanished): take over, unless someone else just did.
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    if await pipe.get(key) != holder:
                        continue
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, run_id)
                    await pipe.execute()
                    return run_id
                except WatchError:
                    continue

    async def active_run(self, issue_key: str) -> Run | None:
        holder = await self.redis.get(self._active_key(issue_key))
        if holder is None:
            return None
        run_id = _text(holder)
        return await self.find(run_id)

    async def append_event(self, run_id: str, kind: str, **data: Any) -> None:
        fields = {"kind": kind, "at": now().isoformat(), "data": json.dumps(data, default=str)}
        await self.redis.xadd(keys.run_events(run_id), fields)  # type: ignore[arg-type]

    async def events(self, run_id: str) -> list[dict[str, Any]]:
        entries = await self.redis.xrange(keys.run_events(run_id))
        out: list[dict[str, Any]] = []
        for _id, fields in entries:
            decoded = {k.decode(): v.decode() for k, v in fields.items()}
            out.append(
                {"kind": decoded["kind"], "at": decoded["at"], **json.loads(decoded["data"])}
            )
        return out

    # --- admission ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def dispatch_lock(self, timeout: float = 10.0) -> AsyncIterator[None]:
        """One admission at a time across workers: the stories in flight that fair share
        counts cannot change between reading them and marking new ones running. Within a
        process the jobs queue on a local lock first, in order: only one of them polls
        Redis (two hundred jobs polling every few milliseconds starve the event loop)."""
        async with (
            self._dispatch_turn,
            self.redis.lock(
                keys.DISPATCH_LOCK, timeout=timeout, sleep=0.005, blocking_timeout=timeout
            ),
        ):
            yield

    async def loads(self) -> list[RunLoad]:
        """Stories in flight and to start, per active run, read in one step. A run stored
        before loads were kept (an upgrade) is read once and its load filled in."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.smembers(keys.ACTIVE_RUNS)
            pipe.hgetall(keys.RUN_LOADS)
            members, table = await pipe.execute()
        active = {_text(m) for m in members}
        loads = {_text(k): _text(v) for k, v in table.items()}
        found = [decode_load(run_id, text) for run_id, text in loads.items() if run_id in active]
        for run_id in sorted(active - loads.keys()):
            run = await self.find(run_id)
            if run is not None and not run.terminal:
                load = RunLoad.of(run)
                # NX: an update since the read above wrote a newer load; it stays
                await self.redis.hsetnx(keys.RUN_LOADS, run_id, encode_load(load))  # type: ignore[misc]
                found.append(load)
        if stale := loads.keys() - active:
            await self.redis.hdel(keys.RUN_LOADS, *stale)  # type: ignore[misc]
        return found

    async def wait_for_capacity(self, run_id: str) -> None:
        """Hold the run back for a slot (its first wait keeps its place in line)."""
        await self.redis.zadd(keys.WAITING_FOR_CAPACITY, {run_id: time.time()}, nx=True)

    async def waiting(self) -> list[str]:
        """The runs held back for capacity, longest waiting first."""
        members = await self.redis.zrange(keys.WAITING_FOR_CAPACITY, 0, -1)
        return [_text(m) for m in members]

    async def stop_waiting(self, run_id: str) -> None:
        await self.redis.zrem(keys.WAITING_FOR_CAPACITY, run_id)

    async def set_landing(self, run_id: str, story_id: str, attempt: int) -> bool:
        """The attempt's agent is done: it holds no agent slot while it lands."""
        run = await self.update(run_id, lambda r: set_landing(r, story_id, attempt, True))
        record = run.stories.get(story_id)
        return record is not None and record.landing

    async def back_to_work(
        self, run_id: str, story_id: str, attempt: int, global_cap: int, default_parallel: int
    ) -> bool:
        """Take an agent slot back for a landing story (its conflict needs the agent),
        within the limits a dispatch keeps: False while there is no room."""
        async with self.dispatch_lock():
            others = [r for r in await self.loads() if r.run_id != run_id]

            def reclaim(r: Run) -> Run | None:
                parallel = max_parallel_of(r, default_parallel)
                return back_to_work(r, story_id, attempt, others, global_cap, parallel)

            run = await self.update(run_id, reclaim)
        record = run.stories.get(story_id)
        current = record is not None and record.state == "running" and record.attempts == attempt
        return not (current and record is not None and record.landing)

    async def branch_head(self, run_id: str) -> str | None:
        """The run branch's head as its last landing turn pushed it, or as it was created (a
        hint: see `LandingTurn`), None when unknown."""
        return await read_head(self.redis, keys.branch_head(run_id))

    async def branch_created(self, run_id: str, sha: str) -> None:
        """The run branch was just created at `sha`: the first story need not fetch to
        learn it (where it lands, and where its worktree starts when the mirror holds it)."""
        await self.redis.set(keys.branch_head(run_id), sha, ex=BRANCH_HEAD_TTL)

    def landing_turn(self, run_id: str) -> LandingTurn:
        """The run branch's landing queue: one story at a time fetches, merges, pushes."""
        return LandingTurn(self.redis, run_id)

    async def check_ref(self, run_id: str) -> CheckRef | None:
        raw = await self.redis.get(keys.check_run(run_id))
        return None if raw is None else CheckRef.model_validate_json(raw)

    async def save_check_ref(self, run_id: str, ref: CheckRef) -> None:
        await self.redis.set(keys.check_run(run_id), ref.model_dump_json())

    # --- small markers ---------------------------------------------------------------------

    async def once(self, name: str, seconds: float) -> bool:
        """True the first time `name` is marked within `seconds` (and marks it)."""
        return await self._mark(keys.once(name), seconds)

    async def open_render_window(self, run_id: str, base: float, cap: float) -> float | None:
        """None when the run's tracking comment was edited within its current window; else
        the window now opened (it grows with the edits made: `edit_window`)."""
        edits = int(await self.redis.get(keys.render_edits(run_id)) or 0)
        window = edit_window(base, cap, edits)
        if not await self._mark(keys.render_window(run_id), window):
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(keys.render_edits(run_id))
            pipe.expire(keys.render_edits(run_id), RENDER_EDITS_TTL)
            await pipe.execute()
        return window

    async def render_wait(self, run_id: str) -> float:
        """Seconds until the run's current edit window closes (0 when it is open)."""
        ms = int(await self.redis.pttl(keys.render_window(run_id)))
        return max(0.0, ms / 1000)

    async def save_transcript(
        self, run_id: str, story_id: str, attempt: int, text: str, ttl_seconds: int
    ) -> None:
        await self.redis.set(keys.transcript(run_id, story_id, attempt), text, ex=ttl_seconds)

    async def _mark(self, key: str, seconds: float) -> bool:
        return bool(await self.redis.set(key, "1", nx=True, px=int(seconds * 1000)))

    # --- story leases: who works on a story right now, kept alive by a heartbeat ----------

    @staticmethod
    def _lease_key(run_id: str, story_id: str) -> str:
        return keys.lease(run_id, story_id)

    async def acquire_lease(self, run_id: str, story_id: str, holder: str, ttl: float) -> bool:
        key = self._lease_key(run_id, story_id)
        return bool(await self.redis.set(key, holder, nx=True, px=int(ttl * 1000)))

    async def queue_lease(self, run_id: str, story_id: str, attempt: int, ttl: float) -> bool:
        """`queued:<attempt>` for a dispatched attempt; it replaces an earlier attempt's
        queued lease (that job never started, and would keep the new one waiting for the
        queued lease to lapse), never a later attempt's and never a runner's."""
        queued = await self.redis.eval(  # type: ignore[misc]
            _QUEUE,
            1,
            self._lease_key(run_id, story_id),
            f"queued:{attempt}",
            str(int(ttl * 1000)),
            str(attempt),
        )
        return bool(queued)

    async def claim_lease(
        self, run_id: str, story_id: str, expected: str, holder: str, ttl: float
    ) -> bool:
        """Take over a lease held as `expected` (or lapsed, or already ours)."""
        key = self._lease_key(run_id, story_id)
        claimed = await self.redis.eval(  # type: ignore[misc]
            _CLAIM, 1, key, expected, holder, str(int(ttl * 1000))
        )
        return bool(claimed)

    async def start_attempt(
        self, run_id: str, story_id: str, attempt: int, holder: str, ttl: float
    ) -> tuple[bool, bool]:
        """`claim_lease` of the dispatcher's `queued:<attempt>`; also says whether this is the
        first delivery of the attempt to get that far (False: an earlier one may have pushed)."""
        claimed = await self.redis.eval(  # type: ignore[misc]
            _START,
            2,
            self._lease_key(run_id, story_id),
            keys.attempt_started(run_id, story_id, attempt),
            f"queued:{attempt}",
            holder,
            str(int(ttl * 1000)),
            str(ATTEMPT_MARK_TTL),
        )
        return bool(claimed), claimed == 2

    async def renew_lease(self, run_id: str, story_id: str, holder: str, ttl: float) -> bool:
        """Extend our lease; False means it expired or someone else holds it now."""
        key = self._lease_key(run_id, story_id)
        renewed = await self.redis.eval(_RENEW, 1, key, holder, str(int(ttl * 1000)))  # type: ignore[misc]
        return bool(renewed)

    async def release_lease(self, run_id: str, story_id: str, holder: str) -> None:
        key = self._lease_key(run_id, story_id)
        await self.redis.eval(_RELEASE, 1, key, holder)  # type: ignore[misc]

    async def lease_holder(self, run_id: str, story_id: str) -> str | None:
        value = await self.redis.get(self._lease_key(run_id, story_id))
        return None if value is None else _text(value)

    @contextlib.asynccontextmanager
    async def heartbeat(
        self, run_id: str, name: str, holder: str, ttl: float
    ) -> AsyncIterator[asyncio.Event]:
        """Keep a held lease alive while the block runs; the event is set if it was lost.
        The lease is released at the end."""
        lost = asyncio.Event()

        async def beat() -> None:
            while True:
                await asyncio.sleep(ttl / 4)
                try:
                    if not await self.renew_lease(run_id, name, holder, ttl):
                        lost.set()
                        return
                except Exception:  # a Redis hiccup: try again at the next beat
                    log.warning("renewing lease %s/%s failed", run_id, name)

        task = asyncio.create_task(beat())
        try:
            yield lost
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await self.release_lease(run_id, name, holder)

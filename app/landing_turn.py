"""A run branch's landing turn and the line of stories waiting for it, in Redis.

One story at a time fetches, merges and pushes onto the run branch (a lock that lapses if
its runner dies). A story whose commit is ready waits in line with what it needs landed
(`runner.landing.Ready`, opaque here); the holder pushes the waiting stories whose commits
its mirror holds along with its own, in one push, and leaves each its landed sha. Siblings
that finish together then cost one push instead of one turn each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import LockError

from app import keys

BRANCH_HEAD_TTL = 7 * 24 * 3600
"""A hint only (a push from a wrong head is refused), kept as long as any run lasts."""
LANDING_TURN_SECONDS = 120.0
"""A landing turn (fetch, merge, push) takes well under a second; a dead holder's lapses."""
LANDING_WAIT_SECONDS = 900.0
LANDED_TTL = 3600
"""How long a story's landed sha waits for its runner (which reads it within milliseconds;
a runner that died meanwhile finds its commit on the branch instead)."""
WAKE_TIMEOUT_SECONDS = 0.5
"""A waiting story blocks on Redis for this long at most before it tries the lock again
(below the connection's 2 s socket timeout)."""


@dataclass(frozen=True)
class InLine:
    """How a wait for the turn ended: the turn is held (`head`: what the previous holder
    pushed, None when unknown), or another holder pushed this story (`landed`)."""

    head: str | None = None
    landed: str | None = None


@dataclass(frozen=True)
class Waiting:
    ticket: str
    ready: str


class LandingTurn:
    def __init__(self, redis: Redis, run_id: str) -> None:
        self._redis = redis
        self._run_id = run_id
        self._head_key = keys.branch_head(run_id)
        self._line_key = keys.landing_line(run_id)
        self._free_key = keys.landing_free(run_id)
        self._lock = redis.lock(keys.landing_turn(run_id), timeout=LANDING_TURN_SECONDS)

    async def acquire(self, ready: str | None = None) -> InLine:
        """Wait for the turn; with `ready`, in line, so the wait may end with the story
        landed by the holder instead."""
        ticket = None
        if ready is not None:
            ticket = uuid.uuid4().hex
            entry = json.dumps({"at": time.time(), "ready": ready})
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._line_key, ticket, entry)
                pipe.expire(self._line_key, int(LANDING_WAIT_SECONDS))
                await pipe.execute()
        try:
            return await self._wait(ticket)
        except BaseException:
            if ticket is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._leave(ticket))
            raise

    async def _wait(self, ticket: str | None) -> InLine:
        deadline = time.monotonic() + LANDING_WAIT_SECONDS
        landed_key = keys.landed_in_line(self._run_id, ticket) if ticket is not None else None
        # the story's own word first: BLPOP answers from the first list that holds anything
        watched = [k for k in (landed_key, self._free_key) if k is not None]
        while True:
            if await self._lock.acquire(blocking=False):
                if ticket is not None and landed_key is not None:
                    await self._leave(ticket)  # holding the turn: nobody else lands it now
                    word: bytes | None = await self._redis.lpop(landed_key)  # type: ignore[misc]
                    if word is not None:  # pushed just before this holder took over
                        await self.release()
                        return InLine(landed=word.decode())
                return InLine(head=await read_head(self._redis, self._head_key))
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {LANDING_WAIT_SECONDS:.0f}s for the landing turn")
            # Woken by a release (or the word that this story landed); the timeout bounds a
            # wake-up lost with a dead holder, whose lock lapses instead.
            block: Any = WAKE_TIMEOUT_SECONDS  # Redis takes fractions; the stubs say int
            got = await self._redis.blpop(watched, timeout=block)  # type: ignore[misc]
            if got is not None and landed_key is not None and got[0].decode() == landed_key:
                return InLine(landed=got[1].decode())

    async def release(self, pushed: str | None = None) -> None:
        """Hand the turn on, with the head this holder pushed."""
        if pushed is not None and await self._lock.owned():
            await self._redis.set(self._head_key, pushed, ex=BRANCH_HEAD_TTL)
        with contextlib.suppress(LockError):
            await self._lock.release()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self._free_key, b"1")
            pipe.ltrim(self._free_key, 0, 0)  # a hint, not a count: one wakes one waiter
            pipe.expire(self._free_key, int(LANDING_WAIT_SECONDS))
            await pipe.execute()

    async def waiting(self) -> list[Waiting]:
        """The others in line, oldest first (for the holder)."""
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._line_key)  # type: ignore[misc]
        entries = []
        for ticket, value in raw.items():
            try:
                entry = json.loads(value)
                entries.append((float(entry["at"]), Waiting(ticket.decode(), str(entry["ready"]))))
            except (ValueError, KeyError, TypeError):
                continue  # not ours to interpret; its owner lands it itself
        return [w for _, w in sorted(entries, key=lambda e: e[0])]

    async def landed(self, ticket: str, sha: str) -> None:
        """Tell a waiting story that this holder pushed it as `sha`."""
        key = keys.landed_in_line(self._run_id, ticket)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, sha)
            pipe.expire(key, LANDED_TTL)
            pipe.hdel(self._line_key, ticket)
            await pipe.execute()

    async def _leave(self, ticket: str) -> None:
        await self._redis.hdel(self._line_key, ticket)  # type: ignore[misc]


async def read_head(redis: Redis, key: str) -> str | None:
    """A sha stored as a plain string (the head a turn handed on), if any."""
    head: bytes | None = await redis.get(key)
    return head.decode() if head else None

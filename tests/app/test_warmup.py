"""Warm-up announcements through a real Redis: heard once per base, bad ones ignored."""

from __future__ import annotations

import asyncio

from app.queue import connect
from app.warmup import WARM_CHANNEL, WarmUp, WarmUps, announce
from testbed.waiting import wait_for

SHA = "a" * 40


async def test_an_announced_base_is_warmed_once_and_a_failure_is_contained(
    redis_url: str,
) -> None:
    redis = connect(redis_url)
    heard: list[WarmUp] = []

    async def warm(w: WarmUp) -> None:
        heard.append(w)
        if w.run_id == "boom":
            raise RuntimeError("fetch failed")

    warmups = WarmUps(redis, warm)
    warmups.start()
    try:

        async def subscribed() -> int:
            return int((await redis.pubsub_numsub(WARM_CHANNEL))[0][1])

        await wait_for(subscribed, 10, "the runner's subscription")
        await announce(redis, WarmUp(run_id="boom", branch="main", sha="b" * 40))
        await announce(redis, WarmUp(run_id="r1", branch="main", sha=SHA))
        await announce(redis, WarmUp(run_id="r1", branch="main", sha=SHA))  # again: no-op
        await redis.publish(WARM_CHANNEL, b'{"run_id": "r2", "branch": "x", "sha": "--all"}')
        await redis.publish(WARM_CHANNEL, b"not json")
        await announce(redis, WarmUp(run_id="r3", branch="main", sha="c" * 40))
        await wait_for(lambda: len(heard) >= 3, 10, "three warm-ups")
        await asyncio.sleep(0.1)  # and no fourth
    finally:
        await warmups.stop()
        await redis.aclose(close_connection_pool=True)
    assert [w.run_id for w in heard] == ["boom", "r1", "r3"]


async def test_announcing_without_redis_never_raises() -> None:
    redis = connect("redis://127.0.0.1:1/0", timeout=0.2)
    try:
        await announce(redis, WarmUp(run_id="r1", branch="main", sha=SHA))
    finally:
        await redis.aclose(close_connection_pool=True)

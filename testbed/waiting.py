"""Polling until something is true: the one helper the tests, the demo and the benchmarks use.

Everything the bot does happens in other processes, so a caller can only look again until
what it waits for shows up. `wait_for` is for async code: it sleeps with `asyncio.sleep`, so
the event loop (and whatever the test runs on it) keeps going while it waits. `wait_until` is
its twin for code with no event loop (process start-up, the demo, the benchmarks).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.05
"""Seconds between looks: short next to anything waited for, long enough not to spin."""


class TimedOut(AssertionError):
    """What was waited for did not happen in time (an AssertionError, so a test fails)."""


class _Deadline:
    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.end = time.monotonic() + timeout

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise TimedOut(f"timed out after {self.timeout:g}s waiting for {self.what}")


async def wait_for(
    check: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = INTERVAL,
) -> T:
    """Call `check` (a plain or an async function) until it returns something truthy, and
    return that; raise `TimedOut` naming `what` after `timeout` seconds."""
    deadline = _Deadline(timeout, what)
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check()
        await asyncio.sleep(interval)


def wait_until(
    check: Callable[[], T | None],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = INTERVAL,
) -> T:
    """`wait_for` for code without an event loop: the same contract, sleeping the thread."""
    deadline = _Deadline(timeout, what)
    while True:
        value = check()
        if value:
            return value
        deadline.check()
        time.sleep(interval)

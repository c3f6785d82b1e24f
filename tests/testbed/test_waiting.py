"""The polling helper: what it returns, how it fails, and that it leaves the event loop free."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from testbed.waiting import TimedOut, wait_for, wait_until


async def test_wait_for_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert await wait_for(lambda: (n := next(counter)) >= 3 and n, 5, interval=0.001) == 3


async def test_wait_for_awaits_an_async_check() -> None:
    seen: list[int] = []

    async def check() -> list[int] | None:
        seen.append(1)
        return seen if len(seen) == 2 else None

    assert await wait_for(check, 5, interval=0.001) == [1, 1]


async def test_wait_for_lets_the_event_loop_run_while_it_waits() -> None:
    """The condition is made true by a task on the same loop: a blocking sleep would starve
    it and time out."""
    done = asyncio.Event()

    async def later() -> None:
        await asyncio.sleep(0.05)
        done.set()

    task = asyncio.create_task(later())
    assert await wait_for(done.is_set, 5, "the task") is True
    await task


async def test_wait_for_names_what_it_waited_for() -> None:
    with pytest.raises(TimedOut, match=r"^timed out after 0.05s waiting for the moon$"):
        await wait_for(lambda: None, 0.05, "the moon", interval=0.01)


def test_wait_until_is_the_same_for_code_without_a_loop() -> None:
    counter = itertools.count()
    assert wait_until(lambda: (n := next(counter)) >= 2 and n, 5, interval=0.001) == 2
    with pytest.raises(AssertionError, match="waiting for nothing"):
        wait_until(lambda: 0, 0.05, "nothing", interval=0.01)

"""Pure parts of the GitHub gateway: truncation, the retry policy, error descriptions."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
from githubkit.exception import RequestFailed, RequestTimeout, SecondaryRateLimitExceeded
from githubkit.response import Response

from app.github import (
    MAX_BODY,
    RetryPolicy,
    SerializedWriter,
    describe_failure,
    is_client_error,
    truncate_body,
)


def response(
    status: int, headers: dict[str, str] | None = None, body: object = None
) -> Response[object]:
    request = httpx.Request("POST", "https://api.github.com/repos/o/r/issues/1/comments")
    content = body if body is not None else {"message": "x"}
    raw = httpx.Response(status, headers=headers or {}, request=request, json=content)
    return Response(raw, object)


def test_truncate_body() -> None:
    assert truncate_body("short") == "short"
    body = "x" * (MAX_BODY + 10)
    cut = truncate_body(body)
    assert len(cut) == MAX_BODY
    assert cut.endswith("65,536 characters.*")
    assert truncate_body("y" * MAX_BODY) == "y" * MAX_BODY


def test_retry_policy_waits_for_rate_limits() -> None:
    policy = RetryPolicy(max_retries=2, max_wait=30)
    exc = SecondaryRateLimitExceeded(response(403, {"retry-after": "5"}), timedelta(seconds=5))
    assert policy(exc, 0) == (True, timedelta(seconds=5))
    long = SecondaryRateLimitExceeded(response(429), timedelta(seconds=600))
    assert policy(long, 1) == (True, timedelta(seconds=30))
    assert policy(exc, 2).do_retry is False


def test_retry_policy_backs_off_on_5xx_only() -> None:
    policy = RetryPolicy(max_retries=3, base_delay=0.5)
    assert policy(RequestFailed(response(502)), 0) == (True, timedelta(seconds=0.5))
    assert policy(RequestFailed(response(500)), 2) == (True, timedelta(seconds=2))
    assert policy(RequestFailed(response(404)), 0).do_retry is False
    assert policy(RequestFailed(response(422)), 0).do_retry is False
    assert policy(RequestFailed(response(403)), 0).do_retry is False
    timeout = RequestTimeout(httpx.ReadTimeout("slow"))
    assert policy(timeout, 0).do_retry is True


def test_failures_are_described_in_githubs_words() -> None:
    validation = {
        "message": "Validation Failed",
        "errors": [
            {"resource": "PullRequest", "code": "custom", "message": "No commits between a and b"},
            {"resource": "PullRequest", "field": "base", "code": "invalid"},
        ],
    }
    refused = RequestFailed(response(422, body=validation))
    assert describe_failure(refused) == (
        "GitHub answered 422 Validation Failed: No commits between a and b; invalid"
    )
    assert is_client_error(refused)
    html = RequestFailed(response(502, body=["<html>"]))
    assert describe_failure(html) == "GitHub answered 502"
    assert not is_client_error(html)
    huge = RequestFailed(response(403, body={"message": "no " * 500}))
    assert len(describe_failure(huge)) == 300
    limited = SecondaryRateLimitExceeded(response(403), timedelta(seconds=60))
    assert not is_client_error(limited)  # waited out already; not a refusal
    timeout = RequestTimeout(httpx.ReadTimeout("slow"))
    assert describe_failure(timeout) == "RequestTimeout: slow"
    assert not is_client_error(timeout)


async def test_serialized_writer_spaces_and_serialises() -> None:
    writer = SerializedWriter(spacing=0.05)
    active = 0
    peak = 0
    stamps: list[float] = []

    async def call() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        stamps.append(time.monotonic())
        await asyncio.sleep(0.001)
        active -= 1

    await asyncio.gather(*(writer.run(call) for _ in range(4)))
    assert peak == 1
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 0.045 for gap in gaps)


async def test_an_urgent_write_goes_before_waiting_ones_without_waiting_its_turn() -> None:
    """The run branch or the pull request is not queued behind label and comment writes,
    and the average rate still holds."""
    writer = SerializedWriter(spacing=0.2)
    order: list[str] = []
    stamps: list[float] = []

    def call(name: str) -> Callable[[], Awaitable[None]]:
        async def write() -> None:
            order.append(name)
            stamps.append(time.monotonic())

        return write

    await writer.run(call("label"))  # the bucket's ordinary write is spent
    waiting = [asyncio.create_task(writer.run(call(f"edit{i}"))) for i in range(2)]
    await asyncio.sleep(0.01)
    start = time.monotonic()
    await writer.run(call("pr"), urgent=True)
    assert time.monotonic() - start < 0.1  # took the spare write, no spacing
    await asyncio.gather(*waiting)
    assert order == ["label", "pr", "edit0", "edit1"]
    # four writes: the two after the burst are each a full spacing apart
    assert stamps[2] - stamps[1] >= 0.18 and stamps[3] - stamps[2] >= 0.18


async def test_the_backlog_is_the_wait_an_ordinary_write_would_have() -> None:
    writer = SerializedWriter(spacing=10)
    assert writer.backlog() == 0  # a full bucket

    async def write() -> None:
        pass

    await writer.run(write)
    assert 9 < writer.backlog() <= 10  # one token to refill
    waiting = asyncio.create_task(writer.run(write))
    await asyncio.sleep(0.01)
    assert 19 < writer.backlog() <= 20  # and one write ahead
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert 9 < writer.backlog() <= 10
    assert SerializedWriter(spacing=0).backlog() == 0


async def test_urgent_writes_alone_are_still_spaced() -> None:
    writer = SerializedWriter(spacing=0.1)
    stamps: list[float] = []

    async def write() -> None:
        stamps.append(time.monotonic())

    for _ in range(4):
        await writer.run(write, urgent=True)
    assert stamps[-1] - stamps[0] >= 0.18  # two from the bucket, then one per spacing

"""Injected faults: secondary rate limits with retry-after, 5xx, pure delays."""

from __future__ import annotations

import time
from typing import Any

import pytest
from githubkit.exception import RequestFailed

from tests.testbed.conftest import World


async def test_secondary_rate_limit_once(igh: Any, world: World) -> None:
    issue = world.state.create_issue(world.repo, "faulty", "", "alice")
    world.state.faults.add(
        method="POST",
        path=r"/issues/\d+/comments$",
        status=403,
        headers={"retry-after": "1"},
        body={"message": "You have exceeded a secondary rate limit"},
        times=1,
    )
    with pytest.raises(RequestFailed) as info:
        await igh.rest.issues.async_create_comment("acme", "widgets", issue.number, body="1")
    response = info.value.response
    assert response.status_code == 403
    assert response.headers["retry-after"] == "1"
    assert "secondary rate limit" in response.json()["message"]
    assert "x-ratelimit-remaining" in response.headers
    second = await igh.rest.issues.async_create_comment("acme", "widgets", issue.number, body="2")
    assert second.status_code == 201
    assert [c.body for c in world.state.comments(world.repo, issue.number)] == ["2"]
    statuses = [r.status for r in world.state.request_log("POST", rf"/issues/{issue.number}/")]
    assert statuses == [403, 201]


async def test_presets_and_delay(igh: Any, world: World) -> None:
    faults = world.state.faults
    faults.secondary_rate_limit(method="GET", path=r"^/repos/acme/widgets$", retry_after=3)
    faults.too_many_requests(method="GET", path=r"^/repos/acme/widgets$")
    faults.server_error(method="GET", path=r"^/repos/acme/widgets$", status=502)
    seen = []
    for _ in range(3):
        with pytest.raises(RequestFailed) as info:
            await igh.rest.repos.async_get("acme", "widgets")
        seen.append(
            (info.value.response.status_code, info.value.response.headers.get("retry-after"))
        )
    assert seen == [(403, "3"), (429, "1"), (502, None)]
    assert (await igh.rest.repos.async_get("acme", "widgets")).status_code == 200

    reset_at = int(time.time()) + 30
    faults.primary_rate_limit(path=r"^/repos/acme/widgets$", reset_at=reset_at)
    with pytest.raises(RequestFailed) as info:
        await igh.rest.repos.async_get("acme", "widgets")
    assert info.value.response.headers["x-ratelimit-remaining"] == "0"
    assert info.value.response.headers["x-ratelimit-reset"] == str(reset_at)

    faults.slow(method="GET", path=r"^/repos/acme/widgets$", delay=0.3)
    started = time.monotonic()
    assert (await igh.rest.repos.async_get("acme", "widgets")).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert faults.snapshot()[-1].hits == 1
    faults.clear()

"""Check runs on the testbed, through githubkit as the bot calls them: every answer parses
with githubkit's models, and what GitHub refuses is refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from githubkit import GitHub
from githubkit.exception import RequestFailed
from githubkit_schemas.latest.models import CheckRun
from pydantic import TypeAdapter

from testbed.github import shapes
from tests.testbed.conftest import World

OWNER, REPO = "acme", "widgets"


def head(world: World) -> str:
    sha = world.state.branch_sha(world.repo, "main")
    assert sha is not None
    return sha


async def test_a_check_run_lives_from_in_progress_to_a_conclusion(igh: Any, world: World) -> None:
    sha = head(world)
    created = await igh.rest.checks.async_create(
        OWNER,
        REPO,
        name="baro",
        head_sha=sha,
        status="in_progress",
        external_id="r1",
        details_url="https://baro.example/runs/r1?token=1.x",
        output={"title": "Running", "summary": "- [ ] S1"},
    )
    assert created.status_code == 201
    check = created.parsed_data
    assert (check.status, check.conclusion, check.head_sha) == ("in_progress", None, sha)
    assert check.app is not None and check.app.id == world.app.id
    assert check.output.summary == "- [ ] S1" and check.completed_at is None

    updated = await igh.rest.checks.async_update(
        OWNER, REPO, check.id, output={"title": "Running", "summary": "- [x] S1"}
    )
    assert updated.parsed_data.status == "in_progress"
    done = await igh.rest.checks.async_update(
        OWNER,
        REPO,
        check.id,
        status="completed",
        conclusion="failure",
        output={"title": "Checkpoint", "summary": "1/2 landed"},
    )
    assert (done.parsed_data.status, done.parsed_data.conclusion) == ("completed", "failure")
    assert done.parsed_data.completed_at is not None

    got = (await igh.rest.checks.async_get(OWNER, REPO, check.id)).parsed_data
    assert got.output.title == "Checkpoint"
    for ref in (sha, "main"):
        listed = (
            await igh.rest.checks.async_list_for_ref(OWNER, REPO, ref, check_name="baro")
        ).parsed_data
        assert listed.total_count >= 1 and listed.check_runs[0].id == check.id
    empty = (
        await igh.rest.checks.async_list_for_ref(OWNER, REPO, sha, check_name="other")
    ).parsed_data
    assert empty.total_count == 0
    stored = world.state.get_check_run(world.repo, check.id)
    assert [(h["status"], h["conclusion"]) for h in stored.history] == [
        ("in_progress", None),
        ("in_progress", None),
        ("completed", "failure"),
    ]
    with world.state.lock:
        TypeAdapter(CheckRun).validate_python(shapes.check_run(world.url, world.repo, stored))


async def test_what_github_refuses(igh: Any, world: World) -> None:
    sha = head(world)

    async def refused(call: Any) -> int:
        with pytest.raises(RequestFailed) as info:
            await call
        return int(info.value.response.status_code)

    token = world.state.create_token(world.installation)

    def post(body: dict[str, Any]) -> int:
        """Bodies githubkit would not even send (it checks them first): raw HTTP."""
        answer = httpx.post(
            f"{world.url}/repos/{OWNER}/{REPO}/check-runs",
            json=body,
            headers={"authorization": f"token {token.token}"},
        )
        return answer.status_code

    create = igh.rest.checks.async_create
    assert await refused(create(OWNER, REPO, name="baro", head_sha="0" * 40)) == 422
    assert post({"name": "", "head_sha": sha}) == 422
    assert post({"name": "baro", "head_sha": sha, "output": {"title": "t"}}) == 422
    assert post({"name": "baro", "head_sha": sha, "status": "completed"}) == 422
    assert post({"name": "baro", "head_sha": sha, "status": "later"}) == 422
    long = {"title": "t", "summary": "x" * 65536}
    assert post({"name": "baro", "head_sha": sha, "output": long}) == 422
    check = (await create(OWNER, REPO, name="baro", head_sha=sha)).parsed_data
    assert check.status == "queued"
    # Another App cannot touch it; a token without `checks` cannot write at all.
    other = world.state.create_app("other-bot")
    other_inst = world.state.create_installation(other, "acme", repositories=[world.repo])
    foreign_token = world.state.create_token(other_inst)
    async with GitHub(foreign_token.token, base_url=world.url, auto_retry=False) as foreign:
        change = foreign.rest.checks.async_update(OWNER, REPO, check.id, name="x")
        assert await refused(change) == 403
    narrow = world.state.create_token(world.installation, permissions={"contents": "read"})
    async with GitHub(narrow.token, base_url=world.url, auto_retry=False) as reader:
        write = reader.rest.checks.async_create(OWNER, REPO, name="b", head_sha=sha)
        assert await refused(write) == 403

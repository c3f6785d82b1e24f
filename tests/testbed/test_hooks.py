"""The App webhook's deliveries API: recorded attempts, cursor pagination, redelivery."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from githubkit import AppAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RequestFailed
from githubkit.webhooks import verify
from githubkit_schemas.latest.models import (
    AppHookDeliveriesDeliveryIdAttemptsPostResponse202,
    HookDelivery,
    HookDeliveryItem,
    ValidationError,
)
from pydantic import TypeAdapter

from testbed.github import delivery
from testbed.github.hooks import HookDelivery as Recorded
from testbed.github.routes_hooks import deliver_recorded
from testbed.github.state import App, Installation
from testbed.waiting import wait_for
from tests.conftest import free_port
from tests.testbed.conftest import World
from tests.testbed.receiver import Receiver, running_receiver


@dataclass
class HookApp:
    """An App of its own per test, so its delivery log starts empty."""

    app: App
    installation: Installation
    gh: GitHub[AppAuthStrategy]


@pytest.fixture
async def hook_app(world: World) -> AsyncIterator[HookApp]:
    app = world.state.create_app(f"hooks-{uuid.uuid4().hex[:8]}")
    installation = world.state.create_installation(app, "acme")
    gh = GitHub(
        AppAuthStrategy(str(app.id), app.private_key_pem),
        base_url=world.url,
        cache_strategy=MemCacheStrategy(),
        auto_retry=False,
    )
    async with gh:
        yield HookApp(app, installation, gh)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def labeled(world: World, hook_app: HookApp) -> dict[str, Any]:
    issue = world.state.create_issue(world.repo, "Redeliver me", "", "alice")
    return delivery.issue_labeled_payload(
        world.state, world.repo, issue.number, "baro", "alice", hook_app.installation.id
    )


async def send(
    world: World, hook_app: HookApp, url: str, payload: Any, guid: str | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await deliver_recorded(
            world.state, hook_app.app, client, url, "issues", payload, guid
        )


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/webhook"


async def test_every_attempt_is_recorded_and_listed_newest_first(
    world: World, hook_app: HookApp, receiver: Receiver
) -> None:
    receiver.answer(503)
    payload = labeled(world, hook_app)
    failed = await send(world, hook_app, receiver.url, payload)
    answered = await send(world, hook_app, receiver.url, payload)
    with pytest.raises(httpx.ConnectError):
        await send(world, hook_app, dead_url(), payload)
    assert (failed.status_code, answered.status_code) == (503, 202)

    resp = await hook_app.gh.rest.apps.async_list_webhook_deliveries()
    items: list[HookDeliveryItem] = resp.parsed_data
    assert [i.status for i in items] == [
        "failed to connect to host",
        "OK",
        "Invalid HTTP Response: 503",
    ]
    assert [i.status_code for i in items] == [0, 202, 503]
    assert items[0].id > items[1].id > items[2].id
    assert items[2].guid == failed.request.headers["X-GitHub-Delivery"]
    for item in items:
        assert (item.event, item.action, item.redelivery) == ("issues", "labeled", False)
        assert item.installation_id == hook_app.installation.id
        assert item.repository_id == world.repo.id
        assert item.throttled_at is None

    one = (await hook_app.gh.rest.apps.async_get_webhook_delivery(items[2].id)).parsed_data
    assert one.url == receiver.url
    assert one.request.headers is not None and one.request.payload is not None
    headers = one.request.headers.model_dump()
    assert headers["X-GitHub-Delivery"] == items[2].guid
    assert headers["X-GitHub-Event"] == "issues"
    assert one.request.payload.model_dump()["action"] == "labeled"
    assert json.loads(one.response.payload or "") == {"status": 503}


async def test_deliveries_belong_to_their_app_and_need_its_jwt(
    world: World, hook_app: HookApp, receiver: Receiver
) -> None:
    await send(world, hook_app, receiver.url, labeled(world, hook_app))
    mine = (await hook_app.gh.rest.apps.async_list_webhook_deliveries()).parsed_data
    other = GitHub(
        AppAuthStrategy(str(world.app.id), world.app.private_key_pem),
        base_url=world.url,
        cache_strategy=MemCacheStrategy(),
        auto_retry=False,
    )
    async with other:
        theirs = (await other.rest.apps.async_list_webhook_deliveries()).parsed_data
        assert mine[0].id not in [d.id for d in theirs]
        with pytest.raises(RequestFailed) as not_theirs:
            await other.rest.apps.async_get_webhook_delivery(mine[0].id)
        assert not_theirs.value.response.status_code == 404
    token = world.state.create_token(hook_app.installation)
    async with httpx.AsyncClient(base_url=world.url) as client:
        as_installation = await client.get(
            "/app/hook/deliveries", headers={"Authorization": f"token {token.token}"}
        )
        anonymous = await client.get("/app/hook/deliveries")
    assert (as_installation.status_code, anonymous.status_code) == (401, 401)


async def test_cursor_pagination_with_link_header(world: World, hook_app: HookApp) -> None:
    for n in range(120):
        world.state.hooks.add(
            app_id=hook_app.app.id,
            guid=f"guid-{n}",
            event="issues",
            url="http://127.0.0.1:9/webhook",
            body=b"{}",
            request_headers={},
            status_code=202,
        )
    apps = hook_app.gh.rest.apps
    assert len((await apps.async_list_webhook_deliveries()).parsed_data) == 30
    assert len((await apps.async_list_webhook_deliveries(per_page=500)).parsed_data) == 100

    first = await apps.async_list_webhook_deliveries(per_page=50)
    link = first.headers["link"]
    assert re.fullmatch(r'<http://[^>]+/app/hook/deliveries\?[^>]*cursor=[^>]+>; rel="next"', link)
    guids = [
        d.guid
        async for d in hook_app.gh.rest.paginate(apps.async_list_webhook_deliveries, per_page=50)
    ]
    assert guids == [f"guid-{n}" for n in reversed(range(120))]
    last = await hook_app.gh.arequest(
        "GET", link.split(">", 1)[0].lstrip("<").replace("per_page=50", "per_page=100")
    )
    assert "link" not in last.headers
    assert len(last.json()) == 70


async def test_redelivery_resends_the_same_event_freshly_signed_to_the_current_url(
    world: World, hook_app: HookApp, receiver: Receiver
) -> None:
    payload = labeled(world, hook_app)
    with pytest.raises(httpx.ConnectError):
        await send(world, hook_app, dead_url(), payload, "guid-redeliver-1")
    (original,) = world.state.hooks.attempts("guid-redeliver-1")
    world.state.hooks.set_url(hook_app.app.id, receiver.url)
    hook_app.app.webhook_secret = "rotated-secret"

    resp = await hook_app.gh.rest.apps.async_redeliver_webhook_delivery(original.id)
    assert resp.status_code == 202
    assert resp.json() == {}
    attempts = await wait_for(
        lambda: len(a := world.state.hooks.attempts(original.guid)) == 2 and a, 10
    )
    again = attempts[1]
    assert again.id > original.id
    assert (again.redelivery, again.status, again.status_code) == (True, "OK", 202)
    assert (again.url, again.body) == (receiver.url, original.body)
    (got,) = receiver.received
    assert got.headers["x-github-delivery"] == "guid-redeliver-1"
    assert got.headers["x-github-event"] == "issues"
    assert got.body == original.body
    assert verify("rotated-secret", got.body, got.headers["x-hub-signature-256"])

    listed = (await hook_app.gh.rest.apps.async_list_webhook_deliveries()).parsed_data
    assert [(d.guid, d.redelivery) for d in listed] == [
        ("guid-redeliver-1", True),
        ("guid-redeliver-1", False),
    ]


async def test_a_failing_redelivery_is_recorded_as_a_new_failed_attempt(
    world: World, hook_app: HookApp, receiver: Receiver
) -> None:
    receiver.answer(503, 500)
    await send(world, hook_app, receiver.url, labeled(world, hook_app), "guid-fails-twice")
    (original,) = world.state.hooks.attempts("guid-fails-twice")
    await hook_app.gh.rest.apps.async_redeliver_webhook_delivery(original.id)
    attempts = await wait_for(
        lambda: len(a := world.state.hooks.attempts(original.guid)) == 2 and a, 10
    )
    assert [(a.status, a.redelivery) for a in attempts] == [
        ("Invalid HTTP Response: 503", False),
        ("Invalid HTTP Response: 500", True),
    ]


async def test_deliveries_older_than_three_days_cannot_be_redelivered(
    world: World, hook_app: HookApp, receiver: Receiver
) -> None:
    receiver.answer(503)
    await send(world, hook_app, receiver.url, labeled(world, hook_app), "guid-too-old")
    (original,) = world.state.hooks.attempts("guid-too-old")
    world.state.hooks.backdate(original.id, timedelta(days=3, minutes=1))
    with pytest.raises(RequestFailed) as refused:
        await hook_app.gh.rest.apps.async_redeliver_webhook_delivery(original.id)
    assert refused.value.response.status_code == 422
    body = TypeAdapter(ValidationError).validate_python(refused.value.response.json())
    assert body.message == "Validation Failed"
    with pytest.raises(RequestFailed) as unknown:
        await hook_app.gh.rest.apps.async_redeliver_webhook_delivery(original.id + 10**6)
    assert unknown.value.response.status_code == 404
    await asyncio.sleep(0.2)
    assert len(world.state.hooks.attempts("guid-too-old")) == 1
    assert len(receiver.received) == 1


async def test_control_api_deliveries_are_recorded(
    world: World, hook_app: HookApp, receiver: Receiver
) -> None:
    issue = world.state.create_issue(world.repo, "Via control", "", "alice")
    async with httpx.AsyncClient(base_url=world.url) as client:
        resp = await client.post(
            "/_testbed/webhooks",
            json={
                "url": receiver.url,
                "event": "issues.labeled",
                "owner": "acme",
                "repo": "widgets",
                "number": issue.number,
                "sender": "alice",
                "label": "baro",
                "app_id": hook_app.app.id,
                "installation_id": hook_app.installation.id,
            },
        )
    assert resp.status_code == 200, resp.text
    (recorded,) = world.state.hooks.for_app(hook_app.app.id)
    assert recorded.guid == resp.json()["delivery_id"]
    assert world.state.hooks.url(hook_app.app.id) == receiver.url


def test_shapes_validate_against_githubkit_models() -> None:
    from testbed.github.hooks import HookLog

    log = HookLog()
    body = json.dumps(
        {"action": "labeled", "installation": {"id": 7}, "repository": {"id": 9}}
    ).encode()
    common: dict[str, Any] = {
        "app_id": 1,
        "guid": "g",
        "event": "issues",
        "url": "http://127.0.0.1:9/webhook",
        "body": body,
        "request_headers": {"X-GitHub-Event": "issues"},
    }
    records: list[Recorded] = [
        log.add(**common, status_code=202, response_body="{}"),
        log.add(**common, status_code=503, redelivery=True),
        log.add(**common, status_code=0, failure="timed out", duration=10.0),
        log.add(**{**common, "body": b"not json"}, status_code=400),
    ]
    for record in records:
        item = TypeAdapter(HookDeliveryItem).validate_python(record.item())
        full = TypeAdapter(HookDelivery).validate_python(record.full())
        assert (item.id, item.guid, item.status_code) == (record.id, "g", record.status_code)
        assert full.url == record.url
    assert [r.status for r in records] == [
        "OK",
        "Invalid HTTP Response: 503",
        "timed out",
        "Invalid HTTP Response: 400",
    ]
    assert (records[0].action, records[0].installation_id, records[0].repository_id) == (
        "labeled",
        7,
        9,
    )
    assert records[3].action is None
    TypeAdapter(AppHookDeliveriesDeliveryIdAttemptsPostResponse202).validate_python({})

"""The testbed's App manifest flow: the "new App" pages, the code exchange, the new App's auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from githubkit import AppAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RequestFailed
from githubkit_schemas.latest.models import AppManifestsCodeConversionsPostResponse201, SimpleUser
from pydantic import TypeAdapter

from testbed.github.routes_manifest import conversion
from testbed.github.server import TestbedServer, running_testbed
from testbed.github.state import GitHubState, utcnow

EVENTS = ["issues", "issue_comment", "pull_request_review", "pull_request_review_comment"]
PERMISSIONS = {"issues": "write", "pull_requests": "write", "contents": "write"}
REDIRECT = "http://127.0.0.1:9/setup/callback"


@pytest.fixture(scope="module")
def server() -> Iterator[TestbedServer]:
    state = GitHubState()
    state.create_app("baro-bot")  # an App that already has the slug a manifest asks for
    with running_testbed(state) as tb:
        yield tb
    state.close()


def manifest(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "baro-bot",
        "url": "https://bot.example.test",
        "description": "Turns an issue into a PR.",
        "hook_attributes": {"url": "https://bot.example.test/webhooks/github", "active": True},
        "redirect_url": REDIRECT,
        "public": False,
        "default_events": EVENTS,
        "default_permissions": PERMISSIONS,
    }
    data.update(changes)
    return data


def post_manifest(
    server: TestbedServer, data: dict[str, Any] | str, org: str | None = None, state: str = "s1"
) -> httpx.Response:
    path = f"/organizations/{org}/settings/apps/new" if org else "/settings/apps/new"
    raw = data if isinstance(data, str) else json.dumps(data)
    return httpx.post(
        f"{server.url}{path}", params={"state": state}, data={"manifest": raw}, timeout=30
    )


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return query["code"][0]


def unauthenticated(server: TestbedServer) -> GitHub[Any]:
    return GitHub(base_url=server.url, auto_retry=False, http_cache=False)


async def test_manifest_creates_an_app_whose_credentials_work(server: TestbedServer) -> None:
    response = post_manifest(server, manifest(), state="xyz")
    location = urlsplit(response.headers["location"])
    assert response.status_code == 302
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert parse_qs(location.query)["state"] == ["xyz"]
    code = code_from(response)

    async with unauthenticated(server) as gh:
        created = (await gh.rest.apps.async_create_from_manifest(code)).parsed_data
    assert created.slug == "baro-bot-2"  # "baro-bot" is taken
    assert created.name == "baro-bot"
    assert isinstance(created.owner, SimpleUser)
    assert (created.owner.login, created.owner.type) == ("octocat", "User")
    assert created.external_url == "https://bot.example.test"
    assert created.events == EVENTS
    perms = created.permissions.model_dump(exclude_unset=True)
    assert perms == {"metadata": "read", **PERMISSIONS}
    assert created.webhook_secret and created.client_secret
    assert created.pem.startswith("-----BEGIN RSA PRIVATE KEY-----")

    recorded = server.state.apps[created.id]
    assert recorded.webhook_url == "https://bot.example.test/webhooks/github"
    assert recorded.webhook_secret == created.webhook_secret
    assert recorded.public is False

    app_gh = GitHub(
        AppAuthStrategy(str(created.id), created.pem),
        base_url=server.url,
        cache_strategy=MemCacheStrategy(),
        auto_retry=False,
    )
    async with app_gh:
        me = (await app_gh.rest.apps.async_get_authenticated()).parsed_data
        assert (me.id, me.slug) == (created.id, "baro-bot-2")
        inst = server.state.create_installation(recorded, "acme")
        token = await app_gh.rest.apps.async_create_installation_access_token(inst.id)
        assert token.parsed_data.token.startswith("ghs_")


async def test_code_is_single_use_with_githubs_404(server: TestbedServer) -> None:
    code = code_from(post_manifest(server, manifest(name="Once")))
    url = f"{server.url}/app-manifests/{code}/conversions"
    assert httpx.post(url, timeout=10).status_code == 201
    again = httpx.post(url, timeout=10)
    assert again.status_code == 404
    body = again.json()
    assert body["message"] == "Not Found" and body["status"] == "404"
    assert body["documentation_url"].startswith("https://docs.github.com/rest/apps/")
    async with unauthenticated(server) as gh:
        with pytest.raises(RequestFailed) as info:
            await gh.rest.apps.async_create_from_manifest("0123456789abcdef0123")
        assert info.value.response.status_code == 404


def test_code_expires_after_an_hour(server: TestbedServer) -> None:
    code = code_from(post_manifest(server, manifest(name="Late")))
    entry = server.state.manifest_codes[code]
    assert timedelta(minutes=59) < entry.expires_at - utcnow() <= timedelta(hours=1)
    entry.expires_at = utcnow() - timedelta(seconds=1)
    assert httpx.post(f"{server.url}/app-manifests/{code}/conversions").status_code == 404


def test_org_route_makes_the_org_the_owner(server: TestbedServer) -> None:
    code = code_from(post_manifest(server, manifest(name="Org Bot"), org="widgets-inc"))
    data = httpx.post(f"{server.url}/app-manifests/{code}/conversions").json()
    assert data["owner"]["login"] == "widgets-inc"
    assert data["owner"]["type"] == "Organization"
    assert data["slug"] == "org-bot"


def test_slugs_are_lower_case_dashed_and_unique(server: TestbedServer) -> None:
    slugs = []
    for _ in range(2):
        code = code_from(post_manifest(server, manifest(name="  My  Bot!!v2 ")))
        slugs.append(httpx.post(f"{server.url}/app-manifests/{code}/conversions").json()["slug"])
    assert slugs == ["my-bot-v2", "my-bot-v2-2"]


def test_redirect_keeps_the_redirect_urls_own_query(server: TestbedServer) -> None:
    response = post_manifest(server, manifest(name="Q", redirect_url=f"{REDIRECT}?a=1"), state="s")
    assert parse_qs(urlsplit(response.headers["location"]).query).keys() == {"a", "code", "state"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("not json", "manifest"),
        ("[1, 2]", "manifest"),
        (manifest(name=""), "name"),
        (manifest(name="x" * 35), "name"),
        (manifest(url=None), "url"),
        (manifest(hook_attributes={"active": True}), "hook_attributes.url"),
        (manifest(redirect_url="javascript:alert(1)"), "redirect_url"),
        (manifest(default_events=["issues", "no_such_event"]), "default_events"),
        (manifest(default_permissions={"contents": "write"}), "default_events"),  # no issues
        (manifest(default_permissions={"issues": "owner"}), "default_permissions"),
        (manifest(default_permissions={"pull_request": "write"}), "default_permissions"),
    ],
)
def test_invalid_manifest_is_422(server: TestbedServer, data: Any, field: str) -> None:
    before = len(server.state.apps)
    response = post_manifest(server, data)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field
    assert len(server.state.apps) == before


def test_missing_manifest_field_is_422(server: TestbedServer) -> None:
    response = httpx.post(f"{server.url}/settings/apps/new", data={"other": "x"})
    assert response.status_code == 422


def test_conversion_shape_validates(server: TestbedServer) -> None:
    code = code_from(post_manifest(server, manifest(name="Shape")))
    state = server.state
    with state.lock:
        data = conversion(state.base_url, state, state.manifest_codes[code].app)
    parsed = TypeAdapter(AppManifestsCodeConversionsPostResponse201).validate_python(data)
    assert parsed.html_url == f"{server.url}/apps/shape"
    assert parsed.installations_count == 0
    assert set(data) == {
        "id",
        "slug",
        "node_id",
        "client_id",
        "owner",
        "name",
        "description",
        "external_url",
        "html_url",
        "created_at",
        "updated_at",
        "permissions",
        "events",
        "installations_count",
        "client_secret",
        "webhook_secret",
        "pem",
    }

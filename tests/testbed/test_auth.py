"""App JWT and installation-token checks behave like api.github.com."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
from githubkit import AppAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RequestFailed

from tests.testbed.conftest import World

BAD_CREDENTIALS = {
    "message": "Bad credentials",
    "documentation_url": "https://docs.github.com/rest",
    "status": "401",
}


def make_jwt(key: str, iss: Any, iat: float, exp: float) -> str:
    """Signed with PyJWS directly: PyJWT refuses to encode an int `iss`, GitHub accepts it."""
    payload = json.dumps({"iss": iss, "iat": int(iat), "exp": int(exp)}).encode()
    return jwt.PyJWS().encode(payload, key, algorithm="RS256")


async def get(world: World, path: str, auth: str | None) -> httpx.Response:
    headers = {"Authorization": auth} if auth else {}
    async with httpx.AsyncClient(base_url=world.url) as client:
        return await client.get(path, headers=headers)


async def test_jwt_variants(world: World, pem: str) -> None:
    other_key = pem  # the session's key, not the App's
    now = time.time()
    key = world.app.private_key_pem
    ok_int = await get(world, "/app", f"Bearer {make_jwt(key, world.app.id, now - 60, now + 540)}")
    assert ok_int.status_code == 200 and ok_int.json()["id"] == world.app.id
    by_client_id = make_jwt(key, world.app.client_id, now - 60, now + 540)
    assert (await get(world, "/app", f"Bearer {by_client_id}")).status_code == 200

    wrong_key = await get(
        world, "/app", f"Bearer {make_jwt(other_key, str(world.app.id), now - 60, now + 540)}"
    )
    assert wrong_key.status_code == 401
    assert set(wrong_key.json()) == {"message", "documentation_url", "status"}

    expired = await get(
        world, "/app", f"Bearer {make_jwt(key, world.app.id, now - 900, now - 300)}"
    )
    assert expired.status_code == 401
    assert "'Expiration time' claim ('exp')" in expired.json()["message"]
    assert expired.json()["status"] == "401"

    too_long = await get(world, "/app", f"Bearer {make_jwt(key, world.app.id, now, now + 3600)}")
    assert too_long.status_code == 401

    garbage = await get(world, "/app", "Bearer not.a.jwt")
    assert garbage.status_code == 401


async def test_githubkit_wrong_key_gets_401(world: World, pem: str) -> None:
    gh = GitHub(
        AppAuthStrategy(str(world.app.id), pem),
        base_url=world.url,
        cache_strategy=MemCacheStrategy(),
        auto_retry=False,
    )
    with pytest.raises(RequestFailed) as info:
        await gh.rest.apps.async_get_repo_installation("acme", "widgets")
    assert info.value.response.status_code == 401


async def test_installation_tokens(world: World) -> None:
    state = world.state
    path = "/repos/acme/widgets"
    token = state.create_token(world.installation)
    assert (await get(world, path, f"token {token.token}")).status_code == 200
    assert (await get(world, path, f"Bearer {token.token}")).status_code == 200

    bogus = await get(world, path, "token ghs_" + "x" * 36)
    assert bogus.status_code == 401 and bogus.json() == BAD_CREDENTIALS

    expired = state.create_token(world.installation)
    state.expire_token(expired)
    response = await get(world, path, f"token {expired.token}")
    assert response.status_code == 401 and response.json() == BAD_CREDENTIALS

    other_inst = state.create_installation(world.app, "globex")
    state.create_repo("globex", "gadgets", installation=other_inst)
    foreign = state.create_token(other_inst)
    response = await get(world, path, f"token {foreign.token}")
    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"
    assert (await get(world, "/repos/globex/gadgets", f"token {foreign.token}")).status_code == 200

    # JWT where an installation token is needed, and the reverse.
    now = time.time()
    app_jwt = make_jwt(world.app.private_key_pem, world.app.id, now - 60, now + 540)
    assert (await get(world, path, f"Bearer {app_jwt}")).status_code == 403
    assert (await get(world, "/app", f"token {token.token}")).status_code == 401
    assert (await get(world, path, None)).status_code == 401


async def test_narrowed_tokens(world: World) -> None:
    state = world.state
    state.create_repo("acme", "secret", installation=world.installation)
    narrowed = state.create_token(world.installation, repositories=["secret"])
    assert (await get(world, "/repos/acme/widgets", f"token {narrowed.token}")).status_code == 404
    assert (await get(world, "/repos/acme/secret", f"token {narrowed.token}")).status_code == 200

    read_only = state.create_token(world.installation, permissions={"issues": "read"})
    issue = state.create_issue(world.repo, "ro", "", "alice")
    async with httpx.AsyncClient(base_url=world.url) as client:
        response = await client.post(
            f"/repos/acme/widgets/issues/{issue.number}/comments",
            json={"body": "hi"},
            headers={"Authorization": f"token {read_only.token}"},
        )
    assert response.status_code == 403
    assert response.json()["message"] == "Resource not accessible by integration"

    now = time.time()
    app_jwt = make_jwt(world.app.private_key_pem, world.app.id, now - 60, now + 540)
    async with httpx.AsyncClient(base_url=world.url) as client:
        too_wide = await client.post(
            f"/app/installations/{world.installation.id}/access_tokens",
            json={"permissions": {"administration": "write"}},
            headers={"Authorization": f"Bearer {app_jwt}"},
        )
        narrowed_json = await client.post(
            f"/app/installations/{world.installation.id}/access_tokens",
            json={"repositories": ["widgets"], "permissions": {"contents": "read"}},
            headers={"Authorization": f"Bearer {app_jwt}"},
        )
    assert too_wide.status_code == 422
    assert narrowed_json.status_code == 201
    body = narrowed_json.json()
    assert body["permissions"] == {"contents": "read", "metadata": "read"}
    assert body["repository_selection"] == "selected"
    assert [r["name"] for r in body["repositories"]] == ["widgets"]
    assert time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")

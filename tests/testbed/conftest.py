"""Fixtures for the testbed's own tests: one live server per module, a githubkit App client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from githubkit import AppAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy

from testbed.github.server import TestbedServer, running_testbed
from testbed.github.state import App, GitHubState, Installation, Repo


@dataclass
class World:
    server: TestbedServer
    state: GitHubState
    app: App
    installation: Installation
    repo: Repo

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    state = GitHubState()
    app = state.create_app("baro-bot")
    inst = state.create_installation(app, "acme")
    repo = state.create_repo(
        "acme",
        "widgets",
        {"README.md": "# widgets\n", "src/app.py": "print('hi')\n"},
        installation=inst,
    )
    state.set_permission(repo, "alice", "write")
    state.set_permission(repo, "mallory", "triage")
    with running_testbed(state) as server:
        yield World(server, state, app, inst, repo)
    state.close()


def app_client(world: World) -> GitHub[AppAuthStrategy]:
    return GitHub(
        AppAuthStrategy(str(world.app.id), world.app.private_key_pem),
        base_url=world.url,
        cache_strategy=MemCacheStrategy(),
        auto_retry=False,
    )


@pytest.fixture
async def gh(world: World) -> AsyncIterator[GitHub[AppAuthStrategy]]:
    client = app_client(world)
    async with client:
        yield client


@pytest.fixture
async def igh(gh: GitHub[AppAuthStrategy], world: World) -> AsyncIterator[Any]:
    """githubkit as an installation; entered so requests share one connection pool."""
    client = gh.with_auth(gh.auth.as_installation(world.installation.id))
    async with client:
        yield client

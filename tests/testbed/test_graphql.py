"""The testbed's GraphQL endpoint: draft → ready, as githubkit calls it."""

from __future__ import annotations

from typing import Any

import pytest
from githubkit.exception import GraphQLFailed

from testbed.github.gitops import branch_ahead
from tests.testbed.conftest import World

MUTATION = (
    "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) "
    "{ pullRequest { id isDraft } } }"
)


async def test_mark_ready_for_review(world: World, igh: Any) -> None:
    branch_ahead(world.repo.git_dir, "feature-ready")
    pull = world.state.create_pull(
        world.repo, title="t", head="feature-ready", base="main", draft=True
    )
    resp = await igh.rest.pulls.async_get(world.repo.owner.login, world.repo.name, pull.number)
    node = resp.parsed_data.node_id
    data = await igh.async_graphql(MUTATION, {"id": node})
    assert data["markPullRequestReadyForReview"]["pullRequest"]["isDraft"] is False
    assert world.state.get_pull(world.repo, pull.number).draft is False


async def test_unknown_node_is_a_graphql_error(igh: Any) -> None:
    with pytest.raises(GraphQLFailed, match="Could not resolve to a node"):
        await igh.async_graphql(MUTATION, {"id": "PR_nope"})

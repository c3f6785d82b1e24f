"""githubkit, as the bot uses it, against the live testbed: every parsed_data must parse."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from githubkit.exception import RequestFailed

from tests.testbed.conftest import World

OWNER, REPO = "acme", "widgets"


async def test_app_and_installation(gh: Any, world: World) -> None:
    app = (await gh.rest.apps.async_get_authenticated()).parsed_data
    assert app.id == world.app.id and app.slug == "baro-bot"
    inst = (await gh.rest.apps.async_get_repo_installation(OWNER, REPO)).parsed_data
    assert inst.id == world.installation.id
    assert inst.account.login == "acme"
    again = (await gh.rest.apps.async_get_installation(world.installation.id)).parsed_data
    assert again.app_id == world.app.id
    with pytest.raises(RequestFailed) as info:
        await gh.rest.apps.async_get_repo_installation(OWNER, "nope")
    assert info.value.response.status_code == 404


async def test_repo_and_permission(igh: Any, world: World) -> None:
    repo = (await igh.rest.repos.async_get(OWNER, REPO)).parsed_data
    assert repo.full_name == "acme/widgets"
    assert repo.default_branch == "main"
    assert repo.clone_url == f"{world.url}/acme/widgets.git"
    perms = {
        user: (
            await igh.rest.repos.async_get_collaborator_permission_level(OWNER, REPO, user)
        ).parsed_data
        for user in ("alice", "mallory", "stranger", "acme")
    }
    assert perms["alice"].permission == "write"
    assert (perms["mallory"].permission, perms["mallory"].role_name) == ("read", "triage")
    assert perms["stranger"].permission == "none"
    assert perms["acme"].permission == "admin"


async def test_issue_comments_reactions(igh: Any, world: World) -> None:
    issue = world.state.create_issue(world.repo, "Add a feature", "Please", "alice")
    got = (await igh.rest.issues.async_get(OWNER, REPO, issue.number)).parsed_data
    assert got.title == "Add a feature" and got.user.login == "alice"

    created = await igh.rest.issues.async_create_comment(OWNER, REPO, issue.number, body="On it")
    assert created.status_code == 201
    comment = created.parsed_data
    assert comment.user.login == "baro-bot[bot]" and comment.user.type == "Bot"
    assert comment.performed_via_github_app.id == world.app.id

    updated = await igh.rest.issues.async_update_comment(OWNER, REPO, comment.id, body="Done")
    assert updated.parsed_data.body == "Done"
    fetched = await igh.rest.issues.async_get_comment(OWNER, REPO, comment.id)
    assert fetched.parsed_data.body == "Done"
    assert [c.body for c in world.state.comments(world.repo, issue.number)] == ["Done"]

    first = await igh.rest.reactions.async_create_for_issue(
        OWNER, REPO, issue.number, content="eyes"
    )
    again = await igh.rest.reactions.async_create_for_issue(
        OWNER, REPO, issue.number, content="eyes"
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.parsed_data.id == again.parsed_data.id
    human = world.state.create_comment(world.repo, issue.number, "/baro retry", "alice")
    on_comment = await igh.rest.reactions.async_create_for_issue_comment(
        OWNER, REPO, human.id, content="rocket"
    )
    assert on_comment.status_code == 201 and on_comment.parsed_data.content == "rocket"
    listed = await igh.rest.reactions.async_list_for_issue(OWNER, REPO, issue.number)
    assert [r.content for r in listed.parsed_data] == ["eyes"]
    assert [r.content for r in world.state.reactions(world.repo, comment_id=human.id)] == ["rocket"]
    token = world.state.create_token(world.installation)
    async with httpx.AsyncClient(base_url=world.url) as client:
        bad = await client.post(
            f"/repos/{OWNER}/{REPO}/issues/{issue.number}/reactions",
            json={"content": "nope"},
            headers={"Authorization": f"token {token.token}"},
        )
    assert bad.status_code == 422 and bad.json()["message"] == "Validation Failed"

    await igh.rest.issues.async_delete_comment(OWNER, REPO, comment.id)
    assert [c.id for c in world.state.comments(world.repo, issue.number)] == [human.id]


async def test_comment_pagination(igh: Any, world: World) -> None:
    issue = world.state.create_issue(world.repo, "Chatty", "", "alice")
    for i in range(5):
        world.state.create_comment(world.repo, issue.number, f"c{i}", "alice")
    page1 = await igh.rest.issues.async_list_comments(OWNER, REPO, issue.number, per_page=2)
    assert [c.body for c in page1.parsed_data] == ["c0", "c1"]
    link = page1.headers["link"]
    assert 'rel="next"' in link and 'rel="last"' in link and "page=3" in link
    page3 = await igh.rest.issues.async_list_comments(OWNER, REPO, issue.number, per_page=2, page=3)
    assert [c.body for c in page3.parsed_data] == ["c4"]
    assert 'rel="next"' not in page3.headers["link"]
    bodies = [
        c.body
        async for c in igh.rest.paginate(
            igh.rest.issues.async_list_comments,
            owner=OWNER,
            repo=REPO,
            issue_number=issue.number,
            per_page=2,
        )
    ]
    assert bodies == [f"c{i}" for i in range(5)]


async def test_labels(igh: Any, world: World) -> None:
    issue = world.state.create_issue(world.repo, "Label me", "", "alice")
    added = await igh.rest.issues.async_add_labels(OWNER, REPO, issue.number, labels=["baro"])
    assert [x.name for x in added.parsed_data] == ["baro"]
    added = await igh.rest.issues.async_add_labels(
        OWNER, REPO, issue.number, labels=["baro:running", "bug"]
    )
    assert [x.name for x in added.parsed_data] == ["baro", "baro:running", "bug"]
    removed = await igh.rest.issues.async_remove_label(OWNER, REPO, issue.number, "baro:running")
    assert [x.name for x in removed.parsed_data] == ["baro", "bug"]
    assert world.state.labels(world.repo, issue.number) == ["baro", "bug"]
    with pytest.raises(RequestFailed) as info:
        await igh.rest.issues.async_remove_label(OWNER, REPO, issue.number, "absent")
    assert info.value.response.status_code == 404
    assert info.value.response.json()["message"] == "Label does not exist"

    label = await igh.rest.issues.async_get_label(OWNER, REPO, "bug")
    assert label.parsed_data.color == "d73a4a"
    created = await igh.rest.issues.async_create_label(
        OWNER, REPO, name="baro:done", color="0e8a16", description="finished"
    )
    assert created.status_code == 201 and created.parsed_data.name == "baro:done"
    with pytest.raises(RequestFailed) as info:
        await igh.rest.issues.async_create_label(OWNER, REPO, name="baro:done", color="0e8a16")
    assert info.value.response.status_code == 422
    assert info.value.response.json()["errors"][0]["code"] == "already_exists"


async def test_issue_create_update(igh: Any, world: World) -> None:
    created = await igh.rest.issues.async_create(OWNER, REPO, title="From the bot", body="b")
    assert created.status_code == 201
    number = created.parsed_data.number
    assert created.parsed_data.user.login == "baro-bot[bot]"
    closed = await igh.rest.issues.async_update(OWNER, REPO, number, state="closed")
    assert closed.parsed_data.state == "closed" and closed.parsed_data.closed_at is not None
    with pytest.raises(RequestFailed) as info:
        await igh.rest.issues.async_create_comment(OWNER, REPO, number, body="x" * 65537)
    assert info.value.response.status_code == 422


async def test_refs_and_pulls(igh: Any, world: World) -> None:
    main = (await igh.rest.git.async_get_ref(OWNER, REPO, "heads/main")).parsed_data
    assert main.ref == "refs/heads/main" and main.object_.type == "commit"
    sha = main.object_.sha

    created = await igh.rest.git.async_create_ref(OWNER, REPO, ref="refs/heads/baro/empty", sha=sha)
    assert created.status_code == 201 and created.parsed_data.object_.sha == sha
    with pytest.raises(RequestFailed) as info:
        await igh.rest.git.async_create_ref(OWNER, REPO, ref="refs/heads/baro/empty", sha=sha)
    assert info.value.response.json()["message"] == "Reference already exists"
    matching = await igh.rest.git.async_list_matching_refs(OWNER, REPO, "heads/baro/")
    assert [r.ref for r in matching.parsed_data] == ["refs/heads/baro/empty"]
    with pytest.raises(RequestFailed) as info:
        await igh.rest.git.async_get_ref(OWNER, REPO, "heads/missing")
    assert info.value.response.status_code == 404

    # No commits between main and the new branch -> GitHub's 422.
    with pytest.raises(RequestFailed) as info:
        await igh.rest.pulls.async_create(OWNER, REPO, title="t", head="baro/empty", base="main")
    assert info.value.response.status_code == 422
    assert "No commits between" in info.value.response.json()["errors"][0]["message"]
    with pytest.raises(RequestFailed) as info:
        await igh.rest.pulls.async_create(OWNER, REPO, title="t", head="ghost", base="main")
    assert info.value.response.json()["errors"][0] == {
        "resource": "PullRequest",
        "field": "head",
        "code": "invalid",
    }

    new_sha = commit_on(world, sha, "feature.txt")
    updated = await igh.rest.git.async_update_ref(
        OWNER, REPO, "heads/baro/empty", sha=new_sha, force=False
    )
    assert updated.parsed_data.object_.sha == new_sha
    with pytest.raises(RequestFailed) as info:
        await igh.rest.git.async_update_ref(OWNER, REPO, "heads/baro/empty", sha=sha)
    assert info.value.response.json()["message"] == "Update is not a fast forward"

    pr = await igh.rest.pulls.async_create(
        OWNER,
        REPO,
        title="Add feature",
        head="acme:baro/empty",
        base="main",
        body="Closes #1",
        draft=True,
    )
    assert pr.status_code == 201
    number = pr.parsed_data.number
    assert pr.parsed_data.draft is True and pr.parsed_data.head.sha == new_sha
    assert pr.parsed_data.user.login == "baro-bot[bot]"
    assert pr.parsed_data.changed_files == 1
    with pytest.raises(RequestFailed) as info:
        await igh.rest.pulls.async_create(
            OWNER, REPO, title="again", head="baro/empty", base="main"
        )
    assert "already exists" in info.value.response.json()["errors"][0]["message"]

    listed = await igh.rest.pulls.async_list(OWNER, REPO, head="acme:baro/empty", state="open")
    assert [p.number for p in listed.parsed_data] == [number]
    assert (await igh.rest.pulls.async_list(OWNER, REPO, head="acme:other")).parsed_data == []
    got = await igh.rest.pulls.async_get(OWNER, REPO, number)
    assert got.parsed_data.title == "Add feature"
    edited = await igh.rest.pulls.async_update(OWNER, REPO, number, body="New body")
    assert edited.parsed_data.body == "New body"
    reviewers = await igh.rest.pulls.async_request_reviewers(
        OWNER, REPO, number, reviewers=["alice"]
    )
    assert reviewers.status_code == 201
    assert [u.login for u in reviewers.parsed_data.requested_reviewers or []] == ["alice"]
    with pytest.raises(RequestFailed) as info:
        await igh.rest.pulls.async_request_reviewers(OWNER, REPO, number, reviewers=["stranger"])
    assert info.value.response.status_code == 422

    # PRs share the issue number sequence and are issues too.
    as_issue = (await igh.rest.issues.async_get(OWNER, REPO, number)).parsed_data
    assert as_issue.pull_request is not None
    comment = await igh.rest.issues.async_create_comment(OWNER, REPO, number, body="PR note")
    assert comment.status_code == 201
    closed = await igh.rest.pulls.async_update(OWNER, REPO, number, state="closed")
    assert closed.parsed_data.state == "closed"
    assert (await igh.rest.pulls.async_list(OWNER, REPO, head="acme:baro/empty")).parsed_data == []


def commit_on(world: World, parent: str, filename: str) -> str:
    """A commit adding `filename` on top of `parent`, written straight into the bare repo."""
    from testbed.github import gitops

    git_dir = world.repo.git_dir
    blob = gitops.run_git(git_dir, "hash-object", "-w", "--stdin", input_bytes=b"new\n").strip()
    base_tree = gitops.run_git(git_dir, "ls-tree", parent)
    tree = gitops.run_git(
        git_dir, "mktree", input_bytes=(base_tree + f"100644 blob {blob}\t{filename}\n").encode()
    ).strip()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return gitops.run_git(git_dir, "commit-tree", tree, "-p", parent, "-m", "add", env=env).strip()


async def test_headers_request_log_and_conditional(igh: Any, world: World) -> None:
    first = await igh.rest.repos.async_get(OWNER, REPO)
    headers = first.headers
    for name in (
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
        "x-ratelimit-resource",
        "x-github-request-id",
        "etag",
    ):
        assert name in headers, name
    assert headers["content-type"] == "application/json; charset=utf-8"
    second = await igh.rest.repos.async_get(OWNER, REPO)  # revalidated: a 304 on the wire
    assert second.parsed_data.id == world.repo.id
    log = world.state.request_log("GET", r"^/repos/acme/widgets$")
    assert [r.status for r in log[-2:]] == [200, 304]
    assert log[-1].auth == f"installation:{world.installation.id}"


async def test_unknown_route_is_github_404(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.url) as client:
        response = await client.get("/nope/at/all")
    assert response.status_code == 404
    assert response.json() == {
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest",
        "status": "404",
    }

"""Every JSON shape the testbed renders validates against githubkit's GitHub schema models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from githubkit_schemas.latest.models import (
    FullRepository,
    GitRef,
    Installation,
    InstallationToken,
    Integration,
    Issue,
    IssueComment,
    Label,
    PullRequest,
    PullRequestSimple,
    Reaction,
    Repository,
    RepositoryCollaboratorPermission,
    SimpleUser,
)
from pydantic import TypeAdapter

from testbed.github import gitops, shapes
from testbed.github.state import GitHubState

BASE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def state() -> Iterator[GitHubState]:
    st = GitHubState(base_url=BASE)
    yield st
    st.close()


def validate(model: Any, data: Any) -> Any:
    return TypeAdapter(model).validate_python(data)


def test_shapes_validate(state: GitHubState) -> None:
    app = state.create_app("shape-bot")
    inst = state.create_installation(app, "acme")
    repo = state.create_repo("acme", "shapes", {"a.txt": "a\n"}, installation=inst)
    state.set_permission(repo, "alice", "maintain")
    issue = state.create_issue(repo, "Title", "Body", "alice", labels=["bug", "baro"])
    comment = state.create_comment(repo, issue.number, "by the app", app=app)
    human = state.create_comment(repo, issue.number, "by a human", "bob")
    reaction, created = state.add_reaction(repo, "eyes", app.bot, comment_id=human.id)
    assert created
    state.add_reaction(repo, "+1", "alice", issue_number=issue.number)
    sha = state.branch_sha(repo, "main")
    assert sha is not None
    gitops.run_git(repo.git_dir, "update-ref", "refs/heads/feature", sha)
    # a commit on feature so the PR has a diff
    tree = gitops.run_git(repo.git_dir, "rev-parse", f"{sha}^{{tree}}").strip()
    commit = gitops.run_git(
        repo.git_dir,
        "commit-tree",
        tree,
        "-p",
        sha,
        "-m",
        "change",
        env={
            "GIT_AUTHOR_NAME": "a",
            "GIT_AUTHOR_EMAIL": "a@b",
            "GIT_COMMITTER_NAME": "a",
            "GIT_COMMITTER_EMAIL": "a@b",
        },
    ).strip()
    gitops.update_ref(repo.git_dir, "refs/heads/feature", commit)
    pull = state.create_pull(repo, title="PR", head="feature", base="main", app=app)
    state.request_reviewers(repo, pull.number, ["alice"])
    token = state.create_token(inst, repositories=["shapes"])

    with state.lock:
        parsed_issue = validate(Issue, shapes.issue(BASE, repo, issue))
        assert [x.name if not isinstance(x, str) else x for x in parsed_issue.labels] == [
            "bug",
            "baro",
        ]
        pr_issue = validate(Issue, shapes.issue(BASE, repo, pull.issue))
        assert pr_issue.pull_request is not None
        bot_comment = validate(IssueComment, shapes.issue_comment(BASE, repo, comment))
        assert bot_comment.user.login == "shape-bot[bot]"
        assert bot_comment.user.type == "Bot"
        assert bot_comment.performed_via_github_app.id == app.id
        validate(IssueComment, shapes.issue_comment(BASE, repo, human))
        validate(Reaction, shapes.reaction(BASE, reaction))
        validate(Label, shapes.label(BASE, repo, issue.labels[0]))
        validate(SimpleUser, shapes.simple_user(BASE, app.bot))
        validate(Repository, shapes.repository(BASE, repo))
        full = validate(FullRepository, shapes.full_repository(BASE, repo))
        assert full.clone_url == f"{BASE}/acme/shapes.git"
        assert full.html_url == f"{BASE}/acme/shapes"
        validate(Installation, shapes.installation(BASE, inst))
        tok = validate(InstallationToken, shapes.installation_token(BASE, token, [repo]))
        assert tok.token.startswith("ghs_")
        assert tok.repository_selection == "selected"
        validate(Integration, shapes.integration(BASE, app))
        full_pr = validate(PullRequest, shapes.pull_request(BASE, repo, pull))
        assert full_pr.head.sha == commit
        assert full_pr.commits == 1
        simple = validate(PullRequestSimple, shapes.pull_request_simple(BASE, repo, pull))
        assert [u.login for u in simple.requested_reviewers or []] == ["alice"]
        ref = gitops.list_refs(repo.git_dir, "refs/heads/main")[0]
        parsed_ref = validate(GitRef, shapes.git_ref(BASE, repo, ref))
        assert parsed_ref.object_.sha == sha
        perm, role = state.permission(repo, "alice")
        parsed_perm = validate(
            RepositoryCollaboratorPermission,
            shapes.collaborator_permission(BASE, repo, state.user("alice"), perm, role),
        )
        assert (parsed_perm.permission, parsed_perm.role_name) == ("write", "maintain")


def test_permission_mapping(state: GitHubState) -> None:
    repo = state.create_repo("acme", "perms")
    for role, expected in [
        ("admin", "admin"),
        ("maintain", "write"),
        ("write", "write"),
        ("triage", "read"),
        ("read", "read"),
    ]:
        state.set_permission(repo, "u", role)
        assert state.permission(repo, "u") == (expected, role)
    assert state.permission(repo, "nobody")[0] == "none"
    assert state.permission(repo, "acme")[0] == "admin"  # the owner

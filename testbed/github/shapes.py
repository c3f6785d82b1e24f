"""Render state objects as the exact JSON api.github.com sends (validated against githubkit).

Pure functions: `base` is the server's origin (e.g. http://127.0.0.1:8123), which serves the
API, the git remotes and the "html" URLs alike. Callers hold `state.lock` while rendering.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from testbed.github.gitops import RefInfo
from testbed.github.state import (
    REACTION_CONTENTS,
    App,
    CheckRun,
    Comment,
    Installation,
    InstallationToken,
    Issue,
    Label,
    Pull,
    Reaction,
    Repo,
    Review,
    ReviewComment,
    User,
    node_id,
)

JSON = dict[str, Any]


def ts(value: datetime | None) -> str | None:
    """GitHub's timestamp format."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def simple_user(base: str, user: User) -> JSON:
    api = f"{base}/users/{user.login}"
    return {
        "login": user.login,
        "id": user.id,
        "node_id": user.node_id,
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{base}/{user.login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": user.type,
        "user_view_type": "public",
        "site_admin": False,
    }


def integration(base: str, app: App) -> JSON:
    """The App object (`GET /app`, `performed_via_github_app`)."""
    return {
        "id": app.id,
        "slug": app.slug,
        "client_id": app.client_id,
        "node_id": node_id("Integration", app.id),
        "owner": simple_user(base, app.owner),
        "name": app.name,
        "description": app.description,
        "external_url": f"{base}/apps/{app.slug}",
        "html_url": f"{base}/apps/{app.slug}",
        "created_at": ts(app.created_at),
        "updated_at": ts(app.created_at),
        "permissions": dict(app.permissions),
        "events": list(app.events),
    }


def label(base: str, repo: Repo, item: Label) -> JSON:
    return {
        "id": item.id,
        "node_id": node_id("Label", item.id),
        "url": f"{repo_api(base, repo)}/labels/{item.name}",
        "name": item.name,
        "color": item.color,
        "default": item.default,
        "description": item.description,
        "archived_at": None,
        "archived_by": None,
    }


def reaction(base: str, item: Reaction) -> JSON:
    return {
        "id": item.id,
        "node_id": node_id("Reaction", item.id),
        "user": simple_user(base, item.user),
        "content": item.content,
        "created_at": ts(item.created_at),
    }


def reaction_rollup(url: str, items: list[Reaction]) -> JSON:
    counts = {content: 0 for content in REACTION_CONTENTS}
    for item in items:
        counts[item.content] += 1
    return {"url": url, "total_count": len(items), **counts}


def repo_api(base: str, repo: Repo) -> str:
    return f"{base}/repos/{repo.owner.login}/{repo.name}"


def repo_html(base: str, repo: Repo) -> str:
    return f"{base}/{repo.owner.login}/{repo.name}"


def clone_url(base: str, repo: Repo) -> str:
    return f"{repo_html(base, repo)}.git"


def _author_association(repo: Repo, user: User) -> str:
    if user.login.lower() == repo.owner.login.lower():
        return "OWNER"
    if repo.roles.get(user.login.lower(), "none") != "none":
        return "COLLABORATOR"
    return "NONE"


def issue(base: str, repo: Repo, item: Issue) -> JSON:
    api = f"{repo_api(base, repo)}/issues/{item.number}"
    kind = "pull" if item.is_pull else "issues"
    data: JSON = {
        "url": api,
        "repository_url": repo_api(base, repo),
        "labels_url": f"{api}/labels{{/name}}",
        "comments_url": f"{api}/comments",
        "events_url": f"{api}/events",
        "html_url": f"{repo_html(base, repo)}/{kind}/{item.number}",
        "id": item.id,
        "node_id": node_id("PullRequest" if item.is_pull else "Issue", item.id),
        "number": item.number,
        "title": item.title,
        "user": simple_user(base, item.user),
        "labels": [label(base, repo, x) for x in item.labels],
        "state": item.state,
        "locked": item.locked,
        "assignee": simple_user(base, item.assignees[0]) if item.assignees else None,
        "assignees": [simple_user(base, u) for u in item.assignees],
        "milestone": None,
        "comments": sum(1 for c in repo.comments.values() if c.issue_number == item.number),
        "created_at": ts(item.created_at),
        "updated_at": ts(item.updated_at),
        "closed_at": ts(item.closed_at),
        "author_association": _author_association(repo, item.user),
        "active_lock_reason": None,
        "body": item.body,
        "closed_by": None,
        "reactions": reaction_rollup(f"{api}/reactions", item.reactions),
        "timeline_url": f"{api}/timeline",
        "performed_via_github_app": integration(base, item.app) if item.app else None,
        "state_reason": item.state_reason,
    }
    if item.is_pull:
        pull = repo.pulls.get(item.number)
        html = f"{repo_html(base, repo)}/pull/{item.number}"
        data["draft"] = pull.draft if pull is not None else False
        data["pull_request"] = {
            "url": f"{repo_api(base, repo)}/pulls/{item.number}",
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "merged_at": ts(pull.merged_at) if pull is not None else None,
        }
    return data


def issue_comment(base: str, repo: Repo, item: Comment) -> JSON:
    api = f"{repo_api(base, repo)}/issues/comments/{item.id}"
    issue_item = repo.issues.get(item.issue_number)
    kind = "pull" if issue_item is not None and issue_item.is_pull else "issues"
    return {
        "url": api,
        "html_url": f"{repo_html(base, repo)}/{kind}/{item.issue_number}#issuecomment-{item.id}",
        "issue_url": f"{repo_api(base, repo)}/issues/{item.issue_number}",
        "id": item.id,
        "node_id": node_id("IssueComment", item.id),
        "user": simple_user(base, item.user),
        "created_at": ts(item.created_at),
        "updated_at": ts(item.updated_at),
        "author_association": _author_association(repo, item.user),
        "body": item.body,
        "reactions": reaction_rollup(f"{api}/reactions", item.reactions),
        "performed_via_github_app": integration(base, item.app) if item.app else None,
    }


def _repo_common(base: str, repo: Repo) -> JSON:
    api = repo_api(base, repo)
    html = repo_html(base, repo)
    host = base.split("://", 1)[-1]
    return {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": simple_user(base, repo.owner),
        "html_url": html,
        "description": repo.description,
        "fork": False,
        "url": api,
        "forks_url": f"{api}/forks",
        "keys_url": f"{api}/keys{{/key_id}}",
        "collaborators_url": f"{api}/collaborators{{/collaborator}}",
        "teams_url": f"{api}/teams",
        "hooks_url": f"{api}/hooks",
        "issue_events_url": f"{api}/issues/events{{/number}}",
        "events_url": f"{api}/events",
        "assignees_url": f"{api}/assignees{{/user}}",
        "branches_url": f"{api}/branches{{/branch}}",
        "tags_url": f"{api}/tags",
        "blobs_url": f"{api}/git/blobs{{/sha}}",
        "git_tags_url": f"{api}/git/tags{{/sha}}",
        "git_refs_url": f"{api}/git/refs{{/sha}}",
        "trees_url": f"{api}/git/trees{{/sha}}",
        "statuses_url": f"{api}/statuses/{{sha}}",
        "languages_url": f"{api}/languages",
        "stargazers_url": f"{api}/stargazers",
        "contributors_url": f"{api}/contributors",
        "subscribers_url": f"{api}/subscribers",
        "subscription_url": f"{api}/subscription",
        "commits_url": f"{api}/commits{{/sha}}",
        "git_commits_url": f"{api}/git/commits{{/sha}}",
        "comments_url": f"{api}/comments{{/number}}",
        "issue_comment_url": f"{api}/issues/comments{{/number}}",
        "contents_url": f"{api}/contents/{{+path}}",
        "compare_url": f"{api}/compare/{{base}}...{{head}}",
        "merges_url": f"{api}/merges",
        "archive_url": f"{api}/{{archive_format}}{{/ref}}",
        "downloads_url": f"{api}/downloads",
        "issues_url": f"{api}/issues{{/number}}",
        "pulls_url": f"{api}/pulls{{/number}}",
        "milestones_url": f"{api}/milestones{{/number}}",
        "notifications_url": f"{api}/notifications{{?since,all,participating}}",
        "labels_url": f"{api}/labels{{/name}}",
        "releases_url": f"{api}/releases{{/id}}",
        "deployments_url": f"{api}/deployments",
        "created_at": ts(repo.created_at),
        "updated_at": ts(repo.created_at),
        "pushed_at": ts(repo.pushed_at or repo.created_at),
        "git_url": f"git://{host}/{repo.full_name}.git",
        "ssh_url": f"git@{host.split(':', 1)[0]}:{repo.full_name}.git",
        "clone_url": clone_url(base, repo),
        "svn_url": html,
        "homepage": None,
        "size": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": None,
        "has_issues": True,
        "has_projects": True,
        "has_downloads": True,
        "has_wiki": True,
        "has_pages": False,
        "has_discussions": False,
        "forks_count": 0,
        "mirror_url": None,
        "archived": False,
        "disabled": False,
        "open_issues_count": sum(1 for i in repo.issues.values() if i.state == "open"),
        "license": None,
        "allow_forking": True,
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": [],
        "visibility": "private" if repo.private else "public",
        "forks": 0,
        "open_issues": sum(1 for i in repo.issues.values() if i.state == "open"),
        "watchers": 0,
        "default_branch": repo.default_branch,
    }


def repository(base: str, repo: Repo) -> JSON:
    """The `repository` object embedded in PRs and webhook payloads."""
    return _repo_common(base, repo)


def full_repository(base: str, repo: Repo) -> JSON:
    """`GET /repos/{owner}/{repo}` as an installation sees it."""
    data = _repo_common(base, repo)
    data.update(
        {
            "permissions": {
                "admin": False,
                "maintain": False,
                "push": True,
                "triage": True,
                "pull": True,
            },
            "allow_squash_merge": True,
            "allow_merge_commit": True,
            "allow_rebase_merge": True,
            "allow_auto_merge": False,
            "delete_branch_on_merge": False,
            "allow_update_branch": False,
            "use_squash_pr_title_as_default": False,
            "squash_merge_commit_message": "COMMIT_MESSAGES",
            "squash_merge_commit_title": "COMMIT_OR_PR_TITLE",
            "merge_commit_message": "PR_TITLE",
            "merge_commit_title": "MERGE_MESSAGE",
            "custom_properties": {},
            "temp_clone_token": "",
            "network_count": 0,
            "subscribers_count": 0,
        }
    )
    return data


def installation(base: str, inst: Installation) -> JSON:
    return {
        "id": inst.id,
        "client_id": inst.app.client_id,
        "account": simple_user(base, inst.account),
        "repository_selection": inst.repository_selection,
        "access_tokens_url": f"{base}/app/installations/{inst.id}/access_tokens",
        "repositories_url": f"{base}/installation/repositories",
        "html_url": f"{base}/settings/installations/{inst.id}",
        "app_id": inst.app.id,
        "app_slug": inst.app.slug,
        "target_id": inst.account.id,
        "target_type": inst.account.type,
        "permissions": dict(inst.permissions),
        "events": list(inst.events),
        "created_at": ts(inst.created_at),
        "updated_at": ts(inst.created_at),
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def installation_token(base: str, token: InstallationToken, repos: list[Repo]) -> JSON:
    """`POST /app/installations/{id}/access_tokens`; `repositories` only when narrowed."""
    data: JSON = {
        "token": token.token,
        "expires_at": ts(token.expires_at),
        "permissions": dict(token.permissions),
        "repository_selection": "selected"
        if token.repo_ids is not None
        else token.installation.repository_selection,
    }
    if token.repo_ids is not None:
        data["repositories"] = [repository(base, r) for r in repos]
    return data


def _link(href: str) -> JSON:
    return {"href": href}


def _pull_common(base: str, repo: Repo, pull: Pull) -> JSON:
    item = pull.issue
    api = f"{repo_api(base, repo)}/pulls/{pull.number}"
    issue_api = f"{repo_api(base, repo)}/issues/{pull.number}"
    html = f"{repo_html(base, repo)}/pull/{pull.number}"
    statuses = f"{repo_api(base, repo)}/statuses/{pull.head_sha}"
    repo_json = repository(base, repo)

    def end(ref: str, sha: str) -> JSON:
        return {
            "label": f"{repo.owner.login}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": simple_user(base, repo.owner),
            "repo": repo_json,
        }

    return {
        "url": api,
        "id": pull.id,
        "node_id": node_id("PullRequest", pull.id),
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue_api,
        "commits_url": f"{api}/commits",
        "review_comments_url": f"{api}/comments",
        "review_comment_url": f"{repo_api(base, repo)}/pulls/comments{{/number}}",
        "comments_url": f"{issue_api}/comments",
        "statuses_url": statuses,
        "number": pull.number,
        "state": item.state,
        "locked": item.locked,
        "title": item.title,
        "user": simple_user(base, item.user),
        "body": item.body,
        "labels": [label(base, repo, x) for x in item.labels],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": ts(item.created_at),
        "updated_at": ts(item.updated_at),
        "closed_at": ts(item.closed_at),
        "merged_at": ts(pull.merged_at),
        "merge_commit_sha": None,
        "assignee": simple_user(base, item.assignees[0]) if item.assignees else None,
        "assignees": [simple_user(base, u) for u in item.assignees],
        "requested_reviewers": [simple_user(base, u) for u in pull.requested_reviewers],
        "requested_teams": [],
        "head": end(pull.head_ref, pull.head_sha),
        "base": end(pull.base_ref, pull.base_sha),
        "_links": {
            "self": _link(api),
            "html": _link(html),
            "issue": _link(issue_api),
            "comments": _link(f"{issue_api}/comments"),
            "review_comments": _link(f"{api}/comments"),
            "review_comment": _link(f"{repo_api(base, repo)}/pulls/comments{{/number}}"),
            "commits": _link(f"{api}/commits"),
            "statuses": _link(statuses),
        },
        "author_association": _author_association(repo, item.user),
        "auto_merge": None,
        "draft": pull.draft,
    }


def pull_request_simple(base: str, repo: Repo, pull: Pull) -> JSON:
    """A PR in list form (`GET /pulls`, `POST .../requested_reviewers`)."""
    return _pull_common(base, repo, pull)


def pull_request(base: str, repo: Repo, pull: Pull) -> JSON:
    """A PR in full (`GET/POST/PATCH /pulls/{n}`)."""
    data = _pull_common(base, repo, pull)
    data.update(
        {
            "merged": pull.merged_at is not None,
            "mergeable": True if pull.issue.state == "open" else None,
            "rebaseable": True if pull.issue.state == "open" else None,
            "mergeable_state": "clean" if pull.issue.state == "open" else "unknown",
            "merged_by": None,
            "comments": sum(1 for c in repo.comments.values() if c.issue_number == pull.number),
            "review_comments": 0,
            "maintainer_can_modify": pull.maintainer_can_modify,
            "commits": pull.commits,
            "additions": pull.additions,
            "deletions": pull.deletions,
            "changed_files": pull.changed_files,
        }
    )
    return data


def git_ref(base: str, repo: Repo, ref: RefInfo) -> JSON:
    kind = "tags" if ref.type == "tag" else "commits"
    return {
        "ref": ref.ref,
        "node_id": base64.b64encode(f"REF_{repo.id}:{ref.ref}".encode()).decode(),
        "url": f"{repo_api(base, repo)}/git/{ref.ref}",
        "object": {
            "sha": ref.sha,
            "type": ref.type,
            "url": f"{repo_api(base, repo)}/git/{kind}/{ref.sha}",
        },
    }


def collaborator_permission(
    base: str, repo: Repo, user: User, permission: str, role_name: str
) -> JSON:
    """`GET /repos/{o}/{r}/collaborators/{u}/permission`."""
    level = {"admin": 4, "maintain": 3, "write": 2, "triage": 1, "read": 0, "none": -1}
    rank = level.get(role_name, -1)
    collaborator = simple_user(base, user)
    collaborator.update(
        {
            "permissions": {
                "admin": rank >= 4,
                "maintain": rank >= 3,
                "push": rank >= 2,
                "triage": rank >= 1,
                "pull": rank >= 0,
            },
            "role_name": role_name,
        }
    )
    return {"permission": permission, "role_name": role_name, "user": collaborator}


def _pull_minimal(base: str, repo: Repo, pull: Pull) -> JSON:
    def end(ref: str, sha: str) -> JSON:
        return {
            "ref": ref,
            "sha": sha,
            "repo": {"id": repo.id, "url": repo_api(base, repo), "name": repo.name},
        }

    return {
        "id": pull.id,
        "number": pull.number,
        "url": f"{repo_api(base, repo)}/pulls/{pull.number}",
        "head": end(pull.head_ref, pull.head_sha),
        "base": end(pull.base_ref, pull.base_sha),
    }


def check_run(base: str, repo: Repo, item: CheckRun) -> JSON:
    """`POST/PATCH/GET .../check-runs[/{id}]`; open PRs whose head is the commit are listed."""
    api = f"{repo_api(base, repo)}/check-runs/{item.id}"
    pulls = [
        _pull_minimal(base, repo, p)
        for p in repo.pulls.values()
        if p.issue.state == "open" and p.head_sha == item.head_sha
    ]
    return {
        "id": item.id,
        "head_sha": item.head_sha,
        "node_id": node_id("CheckRun", item.id),
        "external_id": item.external_id,
        "url": api,
        "html_url": f"{repo_html(base, repo)}/runs/{item.id}",
        "details_url": item.details_url,
        "status": item.status,
        "conclusion": item.conclusion,
        "started_at": ts(item.started_at),
        "completed_at": ts(item.completed_at),
        "output": {
            "title": item.title,
            "summary": item.summary,
            "text": item.text,
            "annotations_count": 0,
            "annotations_url": f"{api}/annotations",
        },
        "name": item.name,
        "check_suite": {"id": item.suite_id},
        "app": integration(base, item.app),
        "pull_requests": pulls,
    }


def pull_review(base: str, repo: Repo, pull: Pull, review: Review) -> JSON:
    """`POST/GET /pulls/{n}/reviews`: GitHub's PullRequestReview."""
    html = f"{repo_html(base, repo)}/pull/{pull.number}#pullrequestreview-{review.id}"
    api = f"{repo_api(base, repo)}/pulls/{pull.number}"
    return {
        "id": review.id,
        "node_id": node_id("PullRequestReview", review.id),
        "user": simple_user(base, review.user),
        "body": review.body,
        "state": review.state,
        "html_url": html,
        "pull_request_url": api,
        "author_association": _author_association(repo, review.user),
        "_links": {"html": _link(html), "pull_request": _link(api)},
        "submitted_at": ts(review.submitted_at),
        "commit_id": review.commit_id,
    }


def review_comment(base: str, repo: Repo, pull: Pull, item: ReviewComment) -> JSON:
    """`GET /pulls/{n}/comments`: GitHub's PullRequestReviewComment."""
    api = f"{repo_api(base, repo)}/pulls/comments/{item.id}"
    pull_api = f"{repo_api(base, repo)}/pulls/{pull.number}"
    html = f"{repo_html(base, repo)}/pull/{pull.number}#discussion_r{item.id}"
    return {
        "url": api,
        "pull_request_review_id": item.review_id,
        "id": item.id,
        "node_id": node_id("PullRequestReviewComment", item.id),
        "diff_hunk": item.diff_hunk,
        "path": item.path,
        "commit_id": item.commit_id,
        "original_commit_id": item.commit_id,
        "user": simple_user(base, item.user),
        "body": item.body,
        "created_at": ts(item.created_at),
        "updated_at": ts(item.created_at),
        "html_url": html,
        "pull_request_url": pull_api,
        "author_association": _author_association(repo, item.user),
        "_links": {"self": _link(api), "html": _link(html), "pull_request": _link(pull_api)},
        "line": item.line,
        "side": item.side,
        "original_line": item.line,
    }

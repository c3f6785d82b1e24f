"""The testbed's world: Apps, installations, tokens, repos, issues, pulls, all in memory.

Tests run the server in a background thread and create/inspect this state directly from the
main thread, so every public method takes the one `RLock`. Refs live in real bare git repos
(see gitops) so that git pushes and the refs API agree.
"""

from __future__ import annotations

import itertools
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from testbed.github import gitops
from testbed.github.entities import (
    CHECK_CONCLUSIONS,
    CHECK_STATUSES,
    DEFAULT_APP_EVENTS,
    DEFAULT_APP_PERMISSIONS,
    LEVELS,
    REACTION_CONTENTS,
    ROLE_TO_PERMISSION,
    App,
    CheckRun,
    Comment,
    Installation,
    InstallationToken,
    Issue,
    Label,
    ManifestCode,
    Permission,
    Pull,
    RateWindow,
    Reaction,
    Repo,
    RequestRecord,
    Review,
    ReviewComment,
    User,
    node_id,
    utcnow,
)
from testbed.github.errors import GitHubError, not_found, validation_failed
from testbed.github.faults import FaultSet
from testbed.github.hooks import HookLog
from testbed.keys import new_key_pair

__all__ = [
    "CHECK_CONCLUSIONS",
    "CHECK_STATUSES",
    "DEFAULT_APP_EVENTS",
    "DEFAULT_APP_PERMISSIONS",
    "LEVELS",
    "REACTION_CONTENTS",
    "ROLE_TO_PERMISSION",
    "App",
    "CheckRun",
    "Comment",
    "GitHubState",
    "Installation",
    "InstallationToken",
    "Issue",
    "Label",
    "ManifestCode",
    "Permission",
    "Pull",
    "RateWindow",
    "Reaction",
    "Repo",
    "RequestRecord",
    "Review",
    "ReviewComment",
    "User",
    "node_id",
    "utcnow",
]


_Found = TypeVar("_Found")


def _found(table: Mapping[int, _Found], key: int) -> _Found:
    """`table[key]`, or the 404 GitHub answers for an unknown number or id."""
    value = table.get(key)
    if value is None:
        raise not_found()
    return value


def _generate_key() -> tuple[str, str]:
    pair = new_key_pair()
    return pair.pkcs1_pem, pair.public_pem


class GitHubState:
    """Everything the fake GitHub knows. `base_url` is where the server answers."""

    def __init__(self, root: Path | None = None, base_url: str = "http://127.0.0.1") -> None:
        self.lock = threading.RLock()
        self._own_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="baro-testbed-gh-"))
        # Temp repos go away with the state even if nobody calls close().
        self._cleanup = (
            weakref.finalize(self, shutil.rmtree, self.root, True) if self._own_root else None
        )
        self.base_url = base_url.rstrip("/")
        self.faults = FaultSet()
        self.token_ttl = timedelta(hours=1)
        self.rate_limit = 5000
        self._ids = itertools.count(1001)
        self.apps: dict[int, App] = {}
        self.users: dict[str, User] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, InstallationToken] = {}
        self.manifest_codes: dict[str, ManifestCode] = {}  # routes_manifest
        self.repos: dict[str, Repo] = {}  # "owner/name" lower-cased
        self.requests: list[RequestRecord] = []
        self._rate: dict[str, RateWindow] = {}
        self.hooks = HookLog()  # the Apps' webhook deliveries (routes_hooks)

    # Lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the bare repos if this state created their folder."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> GitHubState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, *, keep_apps: bool = True) -> None:
        """Forget repos, installations, tokens, faults and the request log (apps optional)."""
        with self.lock:
            for repo in self.repos.values():
                shutil.rmtree(repo.git_dir, ignore_errors=True)
            self.repos.clear()
            self.installations.clear()
            self.tokens.clear()
            self.manifest_codes.clear()
            self.requests.clear()
            self._rate.clear()
            self.faults.clear()
            self.hooks.clear()
            if not keep_apps:
                self.apps.clear()
                self.users.clear()
            else:
                keep = {a.owner.login.lower() for a in self.apps.values()}
                keep |= {a.bot.login.lower() for a in self.apps.values()}
                self.users = {k: v for k, v in self.users.items() if k in keep}

    def new_id(self) -> int:
        with self.lock:
            return next(self._ids)

    # Users ------------------------------------------------------------------------------

    def user(self, login: str | User, type: str = "User") -> User:
        """The user called `login`, created on first mention."""
        if isinstance(login, User):
            return login
        with self.lock:
            found = self.users.get(login.lower())
            if found is None:
                found = User(self.new_id(), login, type)
                self.users[login.lower()] = found
            return found

    # Apps, installations, tokens ---------------------------------------------------------

    def create_app(
        self,
        slug: str = "baro-bot",
        *,
        name: str | None = None,
        owner: str = "baro-dev",
        permissions: dict[str, str] | None = None,
        events: list[str] | None = None,
        webhook_secret: str | None = None,
        app_id: int | None = None,
    ) -> App:
        """A GitHub App with a fresh RSA key; its bot user is `<slug>[bot]`."""
        private_pem, public_pem = _generate_key()
        with self.lock:
            ident = app_id if app_id is not None else self.new_id()
            app = App(
                id=ident,
                slug=slug,
                name=name or slug,
                client_id=f"Iv23li{secrets.token_hex(7)}",
                owner=self.user(owner, "Organization"),
                bot=self.user(f"{slug}[bot]", "Bot"),
                private_key_pem=private_pem,
                public_key_pem=public_pem,
                webhook_secret=webhook_secret or secrets.token_hex(20),
                permissions=dict(permissions or DEFAULT_APP_PERMISSIONS),
                events=list(events or DEFAULT_APP_EVENTS),
                created_at=utcnow(),
            )
            self.apps[app.id] = app
            return app

    def app_by_issuer(self, issuer: object) -> App | None:
        """JWT `iss` may be the app id (str or int) or its client id."""
        with self.lock:
            for app in self.apps.values():
                if str(issuer) in (str(app.id), app.client_id):
                    return app
            return None

    def create_installation(
        self,
        app: App,
        account: str | User,
        *,
        repositories: Iterable[Repo | str] = (),
        repository_selection: Literal["all", "selected"] = "selected",
        permissions: dict[str, str] | None = None,
    ) -> Installation:
        """Install `app` on `account`; with selection "all" it covers all of its repos."""
        with self.lock:
            inst = Installation(
                id=self.new_id(),
                app=app,
                account=self.user(account),
                repository_selection=repository_selection,
                repo_ids={self.get_repo(r).id for r in repositories},
                permissions=dict(permissions or app.permissions),
                events=list(app.events),
                created_at=utcnow(),
            )
            self.installations[inst.id] = inst
            return inst

    def installation_for(self, app: App, repo: Repo | str) -> Installation | None:
        with self.lock:
            target = self.get_repo(repo)
            for inst in self.installations.values():
                if inst.app.id == app.id and inst.covers(target):
                    return inst
            return None

    def create_token(
        self,
        installation: Installation | int,
        *,
        repositories: Iterable[str] | None = None,
        repository_ids: Iterable[int] | None = None,
        permissions: dict[str, str] | None = None,
        ttl: timedelta | None = None,
    ) -> InstallationToken:
        """Mint `ghs_...` for an installation, optionally narrowed (422 like GitHub if wider)."""
        with self.lock:
            inst = (
                installation
                if isinstance(installation, Installation)
                else self.installations.get(installation)
            )
            if inst is None:
                raise not_found()
            repo_ids: set[int] | None = None
            if repositories is not None or repository_ids is not None:
                repo_ids = set()
                for name in repositories or ():
                    repo = self.find_repo(inst.account.login, name)
                    if repo is None or not inst.covers(repo):
                        raise GitHubError(
                            422,
                            "There is at least one repository that does not exist or is not "
                            "accessible to the parent installation.",
                        )
                    repo_ids.add(repo.id)
                for rid in repository_ids or ():
                    match = [r for r in self.repos.values() if r.id == rid and inst.covers(r)]
                    if not match:
                        raise GitHubError(
                            422,
                            "There is at least one repository that does not exist or is not "
                            "accessible to the parent installation.",
                        )
                    repo_ids.add(rid)
            perms = dict(inst.permissions)
            if permissions:
                for name, level in permissions.items():
                    if LEVELS.get(inst.permissions.get(name, "none"), 0) < LEVELS.get(level, 9):
                        raise GitHubError(
                            422, "The permissions requested are not granted to this installation."
                        )
                perms = dict(permissions)
                perms.setdefault("metadata", "read")
            token = InstallationToken(
                token="ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36],
                installation=inst,
                expires_at=utcnow() + (ttl if ttl is not None else self.token_ttl),
                permissions=perms,
                repo_ids=repo_ids,
            )
            self.tokens[token.token] = token
            return token

    def expire_token(self, token: InstallationToken | str) -> None:
        with self.lock:
            value = token.token if isinstance(token, InstallationToken) else token
            self.tokens[value].expires_at = datetime.now(UTC) - timedelta(seconds=1)

    def lookup_token(self, value: str) -> InstallationToken | None:
        with self.lock:
            return self.tokens.get(value)

    # Repos ------------------------------------------------------------------------------

    def create_repo(
        self,
        owner: str,
        name: str,
        files: dict[str, str | bytes] | None = None,
        *,
        installation: Installation | None = None,
        default_branch: str = "main",
        private: bool = False,
        description: str | None = None,
    ) -> Repo:
        """A repo backed by a real bare git repo with one commit on `default_branch`."""
        owner_user = self.user(owner)
        git_dir = self.root / owner / f"{name}.git"
        if git_dir.exists():
            raise GitHubError(422, "Repository creation failed.")
        gitops.init_bare(
            git_dir,
            default_branch=default_branch,
            files=files,
            author=owner,
            email=f"{owner_user.id}+{owner}@users.noreply.github.com",
        )
        with self.lock:
            repo = Repo(
                id=self.new_id(),
                owner=owner_user,
                name=name,
                default_branch=default_branch,
                git_dir=git_dir,
                created_at=utcnow(),
                private=private,
                description=description,
                pushed_at=utcnow(),
            )
            repo.roles[owner.lower()] = "admin"
            for label_name, color, desc in (
                ("bug", "d73a4a", "Something isn't working"),
                ("enhancement", "a2eeef", "New feature or request"),
            ):
                repo.labels[label_name] = Label(self.new_id(), label_name, color, desc, True)
            self.repos[repo.full_name.lower()] = repo
            if installation is not None:
                installation.repo_ids.add(repo.id)
            return repo

    def find_repo(self, owner: str, name: str) -> Repo | None:
        with self.lock:
            return self.repos.get(f"{owner}/{name}".lower())

    def get_repo(self, repo: Repo | str) -> Repo:
        """Accepts a Repo or "owner/name"; raises GitHubError(404) if unknown."""
        if isinstance(repo, Repo):
            return repo
        owner, _, name = repo.partition("/")
        found = self.find_repo(owner, name)
        if found is None:
            raise not_found()
        return found

    # Permissions ------------------------------------------------------------------------

    def set_permission(self, repo: Repo | str, login: str, role: str) -> None:
        """Give `login` a collaborator role: admin|maintain|write|triage|read|none."""
        if role not in ROLE_TO_PERMISSION:
            raise ValueError(f"unknown role {role!r}")
        with self.lock:
            self.user(login)
            target = self.get_repo(repo)
            if role == "none":
                target.roles.pop(login.lower(), None)
            else:
                target.roles[login.lower()] = role

    def permission(self, repo: Repo | str, login: str) -> tuple[Permission, str]:
        """(permission, role_name) the way the collaborator-permission endpoint reports it."""
        with self.lock:
            role = self.get_repo(repo).roles.get(login.lower(), "none")
            return ROLE_TO_PERMISSION[role], role

    # Issues -----------------------------------------------------------------------------

    def _next_number(self, repo: Repo) -> int:
        number = repo.next_number
        repo.next_number += 1
        return number

    def create_issue(
        self,
        repo: Repo | str,
        title: str,
        body: str | None = "",
        user: str | User = "octocat",
        *,
        labels: Iterable[str] = (),
        app: App | None = None,
    ) -> Issue:
        with self.lock:
            target = self.get_repo(repo)
            author = app.bot if app is not None else self.user(user)
            now = utcnow()
            issue = Issue(
                id=self.new_id(),
                number=self._next_number(target),
                title=title,
                body=body,
                user=author,
                created_at=now,
                updated_at=now,
                app=app,
            )
            issue.labels = [self.ensure_label(target, n) for n in labels]
            target.issues[issue.number] = issue
            return issue

    def get_issue(self, repo: Repo | str, number: int) -> Issue:
        with self.lock:
            return _found(self.get_repo(repo).issues, number)

    def update_issue(
        self,
        repo: Repo | str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        state_reason: str | None = None,
        labels: Iterable[str] | None = None,
    ) -> Issue:
        with self.lock:
            target = self.get_repo(repo)
            issue = self.get_issue(target, number)
            if title is not None:
                issue.title = title
            if body is not None:
                issue.body = body
            if state is not None:
                if state not in ("open", "closed"):
                    raise validation_failed(
                        {"resource": "Issue", "field": "state", "code": "invalid"}
                    )
                if state != issue.state:
                    issue.state = "open" if state == "open" else "closed"
                    issue.closed_at = utcnow() if state == "closed" else None
                    issue.state_reason = (
                        (state_reason or "completed") if state == "closed" else "reopened"
                    )
            if labels is not None:
                issue.labels = [self.ensure_label(target, n) for n in labels]
            issue.updated_at = utcnow()
            return issue

    # Comments ---------------------------------------------------------------------------

    def create_comment(
        self,
        repo: Repo | str,
        number: int,
        body: str,
        user: str | User = "octocat",
        *,
        app: App | None = None,
    ) -> Comment:
        """Comment on issue/PR `number`; with `app`, authored by `<slug>[bot]` like GitHub."""
        with self.lock:
            target = self.get_repo(repo)
            issue = self.get_issue(target, number)
            now = utcnow()
            comment = Comment(
                id=self.new_id(),
                issue_number=number,
                body=body,
                user=app.bot if app is not None else self.user(user),
                created_at=now,
                updated_at=now,
                app=app,
            )
            target.comments[comment.id] = comment
            issue.updated_at = now
            return comment

    def get_comment(self, repo: Repo | str, comment_id: int) -> Comment:
        with self.lock:
            return _found(self.get_repo(repo).comments, comment_id)

    def update_comment(self, repo: Repo | str, comment_id: int, body: str) -> Comment:
        with self.lock:
            comment = self.get_comment(repo, comment_id)
            comment.body = body
            comment.updated_at = utcnow()
            return comment

    def delete_comment(self, repo: Repo | str, comment_id: int) -> None:
        with self.lock:
            target = self.get_repo(repo)
            if target.comments.pop(comment_id, None) is None:
                raise not_found()

    def comments(self, repo: Repo | str, number: int) -> list[Comment]:
        """Comments on issue/PR `number`, oldest first."""
        with self.lock:
            target = self.get_repo(repo)
            return sorted(
                (c for c in target.comments.values() if c.issue_number == number),
                key=lambda c: c.id,
            )

    # Reactions --------------------------------------------------------------------------

    def add_reaction(
        self,
        repo: Repo | str,
        content: str,
        user: str | User,
        *,
        issue_number: int | None = None,
        comment_id: int | None = None,
    ) -> tuple[Reaction, bool]:
        """(reaction, created); an existing same-user same-content reaction is returned as is."""
        if content not in REACTION_CONTENTS:
            raise validation_failed({"resource": "Reaction", "field": "content", "code": "invalid"})
        with self.lock:
            target_list = self._reaction_list(repo, issue_number, comment_id)
            who = self.user(user)
            for existing in target_list:
                if existing.user.id == who.id and existing.content == content:
                    return existing, False
            reaction = Reaction(self.new_id(), content, who, utcnow())
            target_list.append(reaction)
            return reaction, True

    def delete_reaction(
        self,
        repo: Repo | str,
        reaction_id: int,
        *,
        issue_number: int | None = None,
        comment_id: int | None = None,
    ) -> None:
        with self.lock:
            target_list = self._reaction_list(repo, issue_number, comment_id)
            for existing in target_list:
                if existing.id == reaction_id:
                    target_list.remove(existing)
                    return
            raise not_found()

    def reactions(
        self, repo: Repo | str, *, issue_number: int | None = None, comment_id: int | None = None
    ) -> list[Reaction]:
        with self.lock:
            return list(self._reaction_list(repo, issue_number, comment_id))

    def _reaction_list(
        self, repo: Repo | str, issue_number: int | None, comment_id: int | None
    ) -> list[Reaction]:
        if (issue_number is None) == (comment_id is None):
            raise ValueError("give exactly one of issue_number, comment_id")
        if issue_number is not None:
            return self.get_issue(repo, issue_number).reactions
        assert comment_id is not None
        return self.get_comment(repo, comment_id).reactions

    # Labels -----------------------------------------------------------------------------

    def ensure_label(
        self,
        repo: Repo | str,
        name: str,
        color: str = "ededed",
        description: str | None = None,
    ) -> Label:
        """The repo label `name`, created if missing (adding an unknown label does that)."""
        with self.lock:
            target = self.get_repo(repo)
            label = target.labels.get(name.lower())
            if label is None:
                label = Label(self.new_id(), name, color, description)
                target.labels[name.lower()] = label
            return label

    def create_label(
        self, repo: Repo | str, name: str, color: str = "ededed", description: str | None = None
    ) -> Label:
        with self.lock:
            target = self.get_repo(repo)
            if name.lower() in target.labels:
                raise validation_failed(
                    {"resource": "Label", "code": "already_exists", "field": "name"}
                )
            return self.ensure_label(target, name, color.lstrip("#"), description)

    def add_labels(self, repo: Repo | str, number: int, names: Iterable[str]) -> list[Label]:
        """Add labels to issue/PR `number`; returns its full label list."""
        with self.lock:
            target = self.get_repo(repo)
            issue = self.get_issue(target, number)
            for name in names:
                label = self.ensure_label(target, name)
                if all(existing.id != label.id for existing in issue.labels):
                    issue.labels.append(label)
            issue.updated_at = utcnow()
            return list(issue.labels)

    def remove_label(self, repo: Repo | str, number: int, name: str) -> list[Label]:
        with self.lock:
            issue = self.get_issue(repo, number)
            for label in issue.labels:
                if label.name.lower() == name.lower():
                    issue.labels.remove(label)
                    issue.updated_at = utcnow()
                    return list(issue.labels)
            raise GitHubError(404, "Label does not exist")

    def labels(self, repo: Repo | str, number: int) -> list[str]:
        """Names of the labels on issue/PR `number`."""
        with self.lock:
            return [label.name for label in self.get_issue(repo, number).labels]

    # Pulls ------------------------------------------------------------------------------

    def create_pull(
        self,
        repo: Repo | str,
        *,
        title: str,
        head: str,
        base: str,
        body: str | None = None,
        draft: bool = False,
        user: str | User = "octocat",
        app: App | None = None,
        maintainer_can_modify: bool = False,
    ) -> Pull:
        """Open a PR, validating like GitHub (422 for a missing branch, a duplicate, no diff)."""
        target = self.get_repo(repo)
        head_owner, _, head_ref = head.rpartition(":")
        if head_owner and head_owner.lower() != target.owner.login.lower():
            raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
        head_sha = gitops.resolve(target.git_dir, f"refs/heads/{head_ref}")
        base_sha = gitops.resolve(target.git_dir, f"refs/heads/{base}")
        if base_sha is None:
            raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
        if head_sha is None:
            raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
        if gitops.is_ancestor(target.git_dir, head_sha, base_sha):
            raise validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"No commits between {base} and {head_ref}",
                }
            )
        stats = gitops.diff_stats(target.git_dir, base_sha, head_sha)
        with self.lock:
            for other in target.pulls.values():
                if (
                    other.issue.state == "open"
                    and other.head_ref == head_ref
                    and other.base_ref == base
                ):
                    raise validation_failed(
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": "A pull request already exists for "
                            f"{target.owner.login}:{head_ref}.",
                        }
                    )
            issue = self.create_issue(target, title, body, user, app=app)
            issue.is_pull = True
            pull = Pull(
                id=self.new_id(),
                issue=issue,
                head_ref=head_ref,
                base_ref=base,
                head_sha=head_sha,
                base_sha=base_sha,
                draft=draft,
                maintainer_can_modify=maintainer_can_modify,
                commits=stats.commits,
                additions=stats.additions,
                deletions=stats.deletions,
                changed_files=stats.changed_files,
            )
            target.pulls[issue.number] = pull
            return pull

    def get_pull(self, repo: Repo | str, number: int) -> Pull:
        with self.lock:
            return _found(self.get_repo(repo).pulls, number)

    def refresh_pull(self, repo: Repo | str, pull: Pull) -> Pull:
        """Re-read head/base shas and diff stats from git (branches move under open PRs)."""
        target = self.get_repo(repo)
        if pull.issue.state != "open":
            return pull
        head_sha = gitops.resolve(target.git_dir, f"refs/heads/{pull.head_ref}")
        base_sha = gitops.resolve(target.git_dir, f"refs/heads/{pull.base_ref}")
        if head_sha is None or base_sha is None:
            return pull
        if (head_sha, base_sha) != (pull.head_sha, pull.base_sha):
            stats = gitops.diff_stats(target.git_dir, base_sha, head_sha)
            with self.lock:
                pull.head_sha, pull.base_sha = head_sha, base_sha
                pull.commits, pull.additions = stats.commits, stats.additions
                pull.deletions, pull.changed_files = stats.deletions, stats.changed_files
        return pull

    def update_pull(
        self,
        repo: Repo | str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        base: str | None = None,
    ) -> Pull:
        target = self.get_repo(repo)
        pull = self.get_pull(target, number)
        if base is not None and gitops.resolve(target.git_dir, f"refs/heads/{base}") is None:
            raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
        with self.lock:
            self.update_issue(target, number, title=title, body=body, state=state)
            if base is not None:
                pull.base_ref = base
            return pull

    def create_review(
        self,
        repo: Repo | str,
        number: int,
        *,
        body: str,
        event: str,
        comments: list[dict[str, Any]],
        user: User,
        commit_id: str | None = None,
    ) -> Review:
        """Submit a review as GitHub does: the author cannot approve or request changes on
        their own PR, and an inline comment must sit on a line of the PR's diff."""
        target = self.get_repo(repo)
        pull = self.refresh_pull(target, self.get_pull(target, number))
        states = {
            "COMMENT": "COMMENTED",
            "APPROVE": "APPROVED",
            "REQUEST_CHANGES": "CHANGES_REQUESTED",
        }
        if event not in states:
            raise validation_failed(
                {"resource": "PullRequestReview", "field": "event", "code": "invalid"}
            )
        if event != "COMMENT" and pull.issue.user.login == user.login:
            verb = "approve" if event == "APPROVE" else "request changes on"
            raise GitHubError(
                422, "Unprocessable Entity", errors=[f"Can not {verb} your own pull request"]
            )
        if event != "APPROVE" and not body and not comments:
            raise GitHubError(422, "Unprocessable Entity", errors=["Review body is required"])
        now = utcnow()
        with self.lock:
            review = Review(
                id=self.new_id(),
                user=user,
                body=body,
                state=states[event],
                commit_id=commit_id or pull.head_sha,
                submitted_at=now,
            )
        for item in comments:
            path, line, text = item.get("path"), item.get("line"), item.get("body")
            if not isinstance(path, str) or not isinstance(line, int) or not isinstance(text, str):
                raise validation_failed(
                    {"resource": "PullRequestReviewComment", "code": "missing_field"}
                )
            side = item.get("side", "RIGHT")
            hunk = next(
                (
                    h
                    for lines, h in gitops.diff_hunks(
                        target.git_dir, pull.base_sha, pull.head_sha, path
                    )
                    if line in lines
                ),
                None,
            )
            if side != "RIGHT" or hunk is None:
                raise GitHubError(
                    422,
                    "Unprocessable Entity",
                    errors=["Pull request review thread line must be part of the diff"],
                )
            with self.lock:
                review.comments.append(
                    ReviewComment(
                        id=self.new_id(),
                        review_id=review.id,
                        path=path,
                        line=line,
                        side=side,
                        body=text,
                        commit_id=review.commit_id,
                        diff_hunk=hunk,
                        user=user,
                        created_at=now,
                    )
                )
        with self.lock:
            pull.reviews.append(review)
        return review

    def reviews(self, repo: Repo | str, number: int) -> list[Review]:
        with self.lock:
            return list(self.get_pull(self.get_repo(repo), number).reviews)

    def request_reviewers(self, repo: Repo | str, number: int, logins: Iterable[str]) -> Pull:
        with self.lock:
            target = self.get_repo(repo)
            pull = self.get_pull(target, number)
            for login in logins:
                if target.roles.get(login.lower(), "none") == "none":
                    raise GitHubError(
                        422,
                        "Reviews may only be requested from collaborators. One or more of the "
                        f"users or teams you specified is not a collaborator of the "
                        f"{target.full_name} repository.",
                    )
                if login.lower() == pull.issue.user.login.lower():
                    raise GitHubError(422, "Review cannot be requested from pull request author.")
                who = self.user(login)
                if all(r.id != who.id for r in pull.requested_reviewers):
                    pull.requested_reviewers.append(who)
            return pull

    def pulls(
        self,
        repo: Repo | str,
        *,
        state: str = "all",
        head: str | None = None,
        base: str | None = None,
    ) -> list[Pull]:
        """PRs, newest first, filtered like `GET /pulls` (head as `owner:branch`)."""
        with self.lock:
            target = self.get_repo(repo)
            found = []
            for pull in sorted(target.pulls.values(), key=lambda p: -p.number):
                if state != "all" and pull.issue.state != state:
                    continue
                if head is not None:
                    owner, _, branch = head.rpartition(":")
                    if owner and owner.lower() != target.owner.login.lower():
                        continue
                    if branch != pull.head_ref:
                        continue
                if base is not None and pull.base_ref != base:
                    continue
                found.append(pull)
            return found

    # Check runs ---------------------------------------------------------------------------

    def write_check_run(
        self, repo: Repo | str, app: App, fields: dict[str, object], run_id: int | None = None
    ) -> CheckRun:
        """Create (no `run_id`) or update a check run, validating like GitHub: a known commit,
        a status and conclusion that agree, an output with a title and a summary, only the App
        that created a check run may change it."""
        target = self.get_repo(repo)
        status, conclusion = fields.get("status"), fields.get("conclusion")
        if status is not None and status not in CHECK_STATUSES:
            raise validation_failed({"resource": "CheckRun", "field": "status", "code": "invalid"})
        if conclusion is not None and conclusion not in CHECK_CONCLUSIONS:
            raise validation_failed(
                {"resource": "CheckRun", "field": "conclusion", "code": "invalid"}
            )
        if conclusion is not None:
            status = "completed"  # GitHub: a conclusion completes the check run
        if status == "completed" and conclusion is None:
            raise GitHubError(422, "Invalid request.\n\nconclusion is required for completed")
        output = fields.get("output")
        if output is not None:
            if not isinstance(output, dict) or not output.get("title") or not output.get("summary"):
                raise GitHubError(422, "Invalid request.\n\noutput needs a title and a summary")
            for part in ("summary", "text"):
                value = output.get(part)
                if isinstance(value, str) and len(value) > 65535:
                    raise validation_failed(
                        {"resource": "CheckRun", "field": f"output.{part}", "code": "too_long"}
                    )
        if run_id is None:
            head, label = fields.get("head_sha"), fields.get("name")
            if not isinstance(label, str) or not label:
                raise validation_failed(
                    {"resource": "CheckRun", "field": "name", "code": "missing_field"}
                )
            if not isinstance(head, str) or not re.fullmatch(r"[0-9a-f]{40}", head):
                raise GitHubError(422, f"No commit found for SHA: {head}")
            if gitops.resolve(target.git_dir, f"{head}^{{commit}}") != head:
                raise GitHubError(422, f"No commit found for SHA: {head}")
        with self.lock:
            if run_id is None:
                check = CheckRun(
                    id=self.new_id(),
                    app=app,
                    name=str(fields["name"]),
                    head_sha=str(fields["head_sha"]),
                    status=str(status or "queued"),
                    started_at=utcnow(),
                    suite_id=self.new_id(),
                )
                target.check_runs[check.id] = check
            else:
                check = self.get_check_run(target, run_id)
                if check.app.id != app.id:
                    raise GitHubError(
                        403,
                        f"Invalid app_id `{app.id}` - check run can only be "
                        "modified by the GitHub App that created it.",
                    )
                if status is not None:
                    check.status = str(status)
            check.conclusion = str(conclusion) if conclusion is not None else check.conclusion
            if check.status != "completed":
                check.conclusion, check.completed_at = None, None
            elif check.completed_at is None:
                check.completed_at = utcnow()
            for attr in ("details_url", "external_id"):
                if isinstance(fields.get(attr), str):
                    setattr(check, attr, fields[attr])
            if isinstance(output, dict):
                check.title, check.summary = output.get("title"), output.get("summary")
                check.text = output.get("text", check.text)
            check.history.append(
                {
                    "status": check.status,
                    "conclusion": check.conclusion,
                    "title": check.title,
                    "summary": check.summary,
                }
            )
            return check

    def get_check_run(self, repo: Repo | str, run_id: int) -> CheckRun:
        with self.lock:
            return _found(self.get_repo(repo).check_runs, run_id)

    def check_runs(self, repo: Repo | str, ref: str, name: str | None = None) -> list[CheckRun]:
        """Check runs on the commit `ref` names (a sha, or a branch), newest first."""
        target = self.get_repo(repo)
        sha = ref if re.fullmatch(r"[0-9a-f]{40}", ref) else None
        sha = sha or gitops.resolve(target.git_dir, f"refs/heads/{ref}")
        if sha is None:
            raise GitHubError(422, f"No commit found for SHA: {ref}")
        with self.lock:
            found = [
                c
                for c in target.check_runs.values()
                if c.head_sha == sha and (name is None or c.name == name)
            ]
            return sorted(found, key=lambda c: -c.id)

    # Git convenience --------------------------------------------------------------------

    def branch_sha(self, repo: Repo | str, branch: str) -> str | None:
        return gitops.resolve(self.get_repo(repo).git_dir, f"refs/heads/{branch}")

    def read_file(self, repo: Repo | str, ref: str, path: str) -> bytes | None:
        return gitops.read_file(self.get_repo(repo).git_dir, ref, path)

    # Request log and rate limits -------------------------------------------------------

    def log_request(self, record: RequestRecord) -> None:
        with self.lock:
            self.requests.append(record)

    def request_log(
        self, method: str | None = None, path: str | None = None
    ) -> list[RequestRecord]:
        """Requests answered so far; `path` is a regex searched in the request path."""
        pattern = re.compile(path) if path is not None else None
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (pattern is None or pattern.search(r.path))
            ]

    def rate_hit(self, key: str) -> RateWindow:
        """Count one request against `key`'s hourly window (5000/h, 60 for anonymous)."""
        now = int(time.time())
        with self.lock:
            window = self._rate.get(key)
            if window is None or window.reset <= now:
                limit = 60 if key == "anonymous" else self.rate_limit
                window = RateWindow(limit=limit, used=0, reset=now + 3600)
                self._rate[key] = window
            window.used += 1
            return RateWindow(window.limit, window.used, window.reset)

    def rate_peek(self, key: str) -> RateWindow:
        """The window as it stands, without counting (conditional 304s are free on GitHub)."""
        with self.lock:
            window = self._rate.get(key)
            if window is None:
                return RateWindow(60 if key == "anonymous" else self.rate_limit, 0, 0)
            return RateWindow(window.limit, window.used, window.reset)

"""The testbed world's records (users, Apps, installations, tokens, repos, issues, pulls).

Plain dataclasses; `GitHubState` (state.py) owns them and serialises access with its lock.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Permission = Literal["admin", "write", "read", "none"]

#: Collaborator roles to the coarse permission GitHub's permission endpoint reports.
ROLE_TO_PERMISSION: dict[str, Permission] = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "push": "write",
    "triage": "read",
    "read": "read",
    "pull": "read",
    "none": "none",
}
REACTION_CONTENTS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
DEFAULT_APP_PERMISSIONS = {
    "metadata": "read",
    "issues": "write",
    "pull_requests": "write",
    "contents": "write",
    "checks": "write",
}
DEFAULT_APP_EVENTS = [
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
]
LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def node_id(kind: str, ident: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode()


@dataclass
class User:
    id: int
    login: str
    type: str = "User"  # "User" | "Bot" | "Organization"

    @property
    def node_id(self) -> str:
        return node_id(self.type, self.id)


@dataclass
class App:
    id: int
    slug: str
    name: str
    client_id: str
    owner: User
    bot: User
    private_key_pem: str
    public_key_pem: str
    webhook_secret: str
    permissions: dict[str, str]
    events: list[str]
    created_at: datetime
    description: str = ""
    # Set by the manifest flow (routes_manifest); Apps made by tests keep the defaults.
    client_secret: str = ""
    external_url: str | None = None
    webhook_url: str | None = None
    public: bool = False


@dataclass
class ManifestCode:
    """The manifest flow's one-time code: exchanged once, within an hour, for the App's keys."""

    app: App
    expires_at: datetime


@dataclass
class Installation:
    id: int
    app: App
    account: User
    repository_selection: Literal["all", "selected"]
    repo_ids: set[int]
    permissions: dict[str, str]
    events: list[str]
    created_at: datetime

    def covers(self, repo: Repo) -> bool:
        if self.repository_selection == "all":
            return repo.owner.login.lower() == self.account.login.lower()
        return repo.id in self.repo_ids


@dataclass
class InstallationToken:
    token: str
    installation: Installation
    expires_at: datetime
    permissions: dict[str, str]
    repo_ids: set[int] | None  # None: everything the installation covers

    @property
    def expired(self) -> bool:
        return datetime.now(UTC) >= self.expires_at

    def covers(self, repo: Repo) -> bool:
        if not self.installation.covers(repo):
            return False
        return self.repo_ids is None or repo.id in self.repo_ids

    def allows(self, permission: str, level: str) -> bool:
        return LEVELS.get(self.permissions.get(permission, "none"), 0) >= LEVELS[level]


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None
    default: bool = False


@dataclass
class Reaction:
    id: int
    content: str
    user: User
    created_at: datetime


@dataclass
class Comment:
    id: int
    issue_number: int
    body: str
    user: User
    created_at: datetime
    updated_at: datetime
    app: App | None = None
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class Issue:
    id: int
    number: int
    title: str
    body: str | None
    user: User
    created_at: datetime
    updated_at: datetime
    state: Literal["open", "closed"] = "open"
    state_reason: str | None = None
    closed_at: datetime | None = None
    labels: list[Label] = field(default_factory=list)
    assignees: list[User] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    app: App | None = None
    locked: bool = False
    is_pull: bool = False


@dataclass
class ReviewComment:
    """An inline comment of a pull request review, on one line of the PR's diff."""

    id: int
    review_id: int
    path: str
    line: int
    side: str
    body: str
    commit_id: str
    diff_hunk: str
    user: User
    created_at: datetime


@dataclass
class Review:
    id: int
    user: User
    body: str
    state: str
    commit_id: str
    submitted_at: datetime
    comments: list[ReviewComment] = field(default_factory=list)


@dataclass
class Pull:
    """A pull request; its title/body/state/labels live on `issue` (same number), like GitHub."""

    id: int
    issue: Issue
    head_ref: str
    base_ref: str
    head_sha: str
    base_sha: str
    draft: bool = False
    maintainer_can_modify: bool = False
    requested_reviewers: list[User] = field(default_factory=list)
    merged_at: datetime | None = None
    commits: int = 0
    additions: int = 0
    deletions: int = 0
    changed_files: int = 0
    reviews: list[Review] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.issue.number


CHECK_STATUSES = ("queued", "in_progress", "completed")
CHECK_CONCLUSIONS = (
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
)


@dataclass
class CheckRun:
    """A check run an App reported on a commit (`/repos/{o}/{r}/check-runs`)."""

    id: int
    app: App
    name: str
    head_sha: str
    status: str
    started_at: datetime
    suite_id: int
    conclusion: str | None = None
    completed_at: datetime | None = None
    details_url: str | None = None
    external_id: str | None = None
    title: str | None = None
    summary: str | None = None
    text: str | None = None
    history: list[dict[str, str | None]] = field(default_factory=list)
    """Every write, as (status, conclusion, title, summary): what tests look at."""


@dataclass
class Repo:
    id: int
    owner: User
    name: str
    default_branch: str
    git_dir: Path
    created_at: datetime
    private: bool = False
    description: str | None = None
    labels: dict[str, Label] = field(default_factory=dict)  # lower-cased name -> label
    issues: dict[int, Issue] = field(default_factory=dict)  # issues and pulls, by number
    pulls: dict[int, Pull] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    check_runs: dict[int, CheckRun] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)  # lower-cased login -> role
    next_number: int = 1
    pushed_at: datetime | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"


@dataclass
class RequestRecord:
    """One request the server answered (control API excluded)."""

    method: str
    path: str
    query: str
    status: int
    started: float  # time.time()
    duration: float  # seconds until the response started
    auth: str  # "installation:<id>", "app:<id>", "anonymous" or "invalid"

    def as_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "started": self.started,
            "duration": self.duration,
            "auth": self.auth,
        }


@dataclass
class RateWindow:
    limit: int
    used: int
    reset: int

"""The durable record of one run (what Redis stores), separate from the plan it executes."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.core.plan import Plan, PlanStats, RunState, StoryProgress, StoryState
from app.core.routing import RepoConfig

FailureKind = Literal[
    "execution",  # the agent could not do it (budget, no finish, gave up)
    "verification",  # tests or verify commands failed
    "conflict",  # could not integrate with stories that landed first
    "no_change",  # nothing to commit
    "workflow",  # touched .github/workflows/ (no permission to push)
    "refused",  # left something that cannot be committed safely (nested repo, link out…)
    "provider",  # the model provider failed (quota, auth, capacity)
    "transport",  # git/GitHub/network trouble
    "infrastructure",  # the runner itself (sandbox, disk, crash, lease lost)
    "cancelled",
]

TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled", "checkpoint"})


def run_id_for(delivery_id: str) -> str:
    """Derived from the delivery, so a re-run of the intake job finds the same run."""
    return "r" + hashlib.sha256(delivery_id.encode()).hexdigest()[:11]


def now() -> datetime:
    return datetime.now(UTC)


class VerifyResult(BaseModel):
    """One verification command run on the integrated branch."""

    command: str
    exit_code: int | None
    passed: bool
    output_tail: str = ""
    duration_s: float = 0.0


EnvironmentState = Literal["pending", "ready", "failed"]
DEFAULT_ENVIRONMENT = (
    "the default environment (Python 3 with uv, Node LTS with npm, git, build tools)"
)


class RunEnvironment(BaseModel):
    """Where every sandboxed command of a run runs, chosen once at planning from the default
    branch, and how its preparation (image pull, `setup:`) went."""

    image: str | None = None
    """The image as the repository named it; None: the runner's default environment."""
    source: Literal["baro.yml", "devcontainer", "default"] = "default"
    note: str | None = None
    """Why a devcontainer was passed over (shown in the plan comment)."""
    digest: str | None = None
    """The image digest the run was prepared with: every story uses exactly this one."""
    state: EnvironmentState = "pending"
    generation: int = 1
    """Counts preparations (a retry after a failed one prepares again)."""
    error: str | None = None
    error_kind: str | None = None
    """`bad-reference`, `not-found`, `unauthorized`, `unreachable`, `no-shell`, `setup`…"""
    output_tail: str | None = None
    """The failed setup command's last output."""
    setup_seconds: float | None = None

    def describe(self) -> str:
        """`node:22` (from `.github/baro.yml`), or the default environment."""
        if self.image is None:
            return DEFAULT_ENVIRONMENT
        where = {"baro.yml": "`.github/baro.yml`", "devcontainer": "the devcontainer"}
        return f"image `{self.image}` (from {where.get(self.source, self.source)})"


def needs_preparation(run: Run) -> bool:
    """An image to pull or `setup:` to run before the first story (else stories start at once)."""
    env = run.environment
    if env is None or env.state == "ready":
        return False
    setup = run.repo_config.setup if run.repo_config else []
    return env.image is not None or bool(setup)


Severity = Literal["blocking", "warning", "note"]
SEVERITIES: tuple[Severity, ...] = ("blocking", "warning", "note")


class Finding(BaseModel):
    severity: Severity
    file: str
    line: int | None = None
    problem: str
    story: str | None = None
    inline: bool = False
    """The line is part of the PR's diff, so GitHub accepts an inline comment on it."""


class ReviewRound(BaseModel):
    """One review of the integrated branch and what it led to."""

    round: int
    summary: str = ""
    findings: list[Finding] = Field(default_factory=list)
    stats: PlanStats | None = None
    fixes: list[str] = Field(default_factory=list)
    """Fix stories this round added (their ids in the plan)."""
    error: str | None = None
    """The review could not be made (model error, budget): the run goes on without it."""

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocking"]


class AttemptSpan(BaseModel):
    """One attempt of a story: dispatched → finished, and how it ended."""

    attempt: int
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None
    """`landed`, or the failure kind (`verification`, `conflict`, `infrastructure`…)."""
    model: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return max((self.finished_at - self.started_at).total_seconds(), 0.0)


class StoryRecord(BaseModel):
    """What happened to one story of a run, across its attempts."""

    state: StoryState = "pending"
    attempts: int = 0
    story_retries: int = 0
    infra_retries: int = 0
    model: str | None = None
    sha: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    input_tokens: int = 0
    """Whole prompt tokens (uncached + cache reads + cache writes) over all attempts."""
    cache_read_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    """None once any call had an unknown price: never shown as $0."""
    tier: str | None = None
    verify_output: str | None = None
    failure_kind: FailureKind | None = None
    failure: str | None = None
    previous_failure: str | None = None
    """Why the attempt before this one failed (shown to the retrying agent)."""
    awaiting_decision: bool = False
    """A runner reported a failure that the orchestrator has not yet acted on."""
    landing: bool = False
    """Running, with its agent done: the story is being committed and pushed, which holds
    no agent slot (`scheduler.working`), so another story may start beside it."""
    wants_agent: bool = False
    """Landing, and its agent is needed again (a conflict): the next free slot is kept for
    it (`scheduler.back_to_work`)."""
    evidence: list[str] = Field(default_factory=list)
    summary: str | None = None
    refusals: list[str] = Field(default_factory=list)
    """What baro refused to commit for this story, over all attempts (`path: why`)."""
    spans: list[AttemptSpan] = Field(default_factory=list)
    """Every attempt's time: a story's duration counts all of them, not only the last."""

    @property
    def duration_s(self) -> float | None:
        """Time spent over every finished attempt (records older than `spans`: the last)."""
        if self.spans:
            done = [d for span in self.spans if (d := span.duration_s) is not None]
            last = self.spans[-1]
            if last.finished_at is None and self.finished_at is not None:
                done.append(max((self.finished_at - last.started_at).total_seconds(), 0.0))
            return sum(done) if done else None
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def started(self, attempt: int, at: datetime) -> list[AttemptSpan]:
        """The spans with a new attempt begun at `at`."""
        return [*self.spans, AttemptSpan(attempt=attempt, started_at=at)]

    def ended(self, at: datetime, outcome: str, model: str | None = None) -> list[AttemptSpan]:
        """The spans with the open attempt closed at `at` (no open one: unchanged)."""
        if not self.spans or self.spans[-1].finished_at is not None:
            return list(self.spans)
        last = self.spans[-1].model_copy(
            update={"finished_at": at, "outcome": outcome, "model": model or self.spans[-1].model}
        )
        return [*self.spans[:-1], last]

    def progress(self) -> StoryProgress:
        return StoryProgress(
            state=self.state,
            duration_s=self.duration_s,
            model=self.model,
            cost_usd=self.cost_usd,
            attempts=self.attempts,
            note=self.failure,
        )


class Run(BaseModel):
    id: str
    delivery_id: str
    installation_id: int
    owner: str
    repo: str
    issue_number: int
    issue_title: str
    requester: str
    requester_id: int | None = None
    trigger: Literal["label", "comment"]
    plan_only: bool = False
    instructions: str = ""
    state: RunState = "queued"
    comment_id: int | None = None
    default_branch: str | None = None
    base_sha: str | None = None
    repo_config: RepoConfig | None = None
    environment: RunEnvironment | None = None
    """Chosen at planning; None for runs planned before environments existed."""
    plan: Plan | None = None
    plan_stats: PlanStats | None = None
    failure: str | None = None
    branch: str | None = None
    pr_branch: str | None = None
    """Set for a follow-up run on the bot's own pull request (`issue_number` is then the PR):
    the PR's branch, which the run extends instead of making a branch and a PR of its own."""
    stories: dict[str, StoryRecord] = Field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    pr_refusals: int = 0
    """Failed attempts to open or update the pull request since the run last finished."""
    verification: list[VerifyResult] = Field(default_factory=list)
    fix_story: str | None = None
    """The story added after a red verification (at most one per run)."""
    reviews: list[ReviewRound] = Field(default_factory=list)
    """Every review of the integrated branch (`app.core.review`), in order."""
    review_posted: bool = False
    """The pull request review was submitted (once per run)."""
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)
    version: int = 0

    @property
    def issue_key(self) -> str:
        return issue_key(self.owner, self.repo, self.issue_number)

    @property
    def marker(self) -> str:
        return f"<!-- baro:run:{self.id} -->"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def issue_key(owner: str, repo: str, number: int) -> str:
    return f"{owner.lower()}/{repo.lower()}#{number}"


BRANCH_PREFIX = "baro/"


def branch_name(issue_number: int, title: str) -> str:
    """`baro/issue-42-reservation-status-enum`: readable, valid as a git ref, bounded."""
    words = re.findall(r"[a-z0-9]+", title.lower())
    slug = "-".join(words)[:40].strip("-") or "run"
    return f"{BRANCH_PREFIX}issue-{issue_number}-{slug}"

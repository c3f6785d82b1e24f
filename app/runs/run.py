"""The durable record of one run (what Redis stores), separate from the plan it executes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.llm.routing import RepoConfig
from app.runs.models import Plan, PlanStats, RunState

TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled", "checkpoint"})


def run_id_for(delivery_id: str) -> str:
    """Derived from the delivery, so a re-run of the intake job finds the same run."""
    return "r" + hashlib.sha256(delivery_id.encode()).hexdigest()[:11]


def now() -> datetime:
    return datetime.now(UTC)


class Run(BaseModel):
    id: str
    delivery_id: str
    installation_id: int
    owner: str
    repo: str
    issue_number: int
    issue_title: str
    requester: str
    trigger: Literal["label", "comment"]
    plan_only: bool = False
    instructions: str = ""
    state: RunState = "queued"
    comment_id: int | None = None
    default_branch: str | None = None
    base_sha: str | None = None
    repo_config: RepoConfig | None = None
    plan: Plan | None = None
    plan_stats: PlanStats | None = None
    failure: str | None = None
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

"""What a webhook delivery asks the bot to do, as the worker receives it (pure data)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

TriggerKind = Literal["label", "comment"]


class Trigger(BaseModel):
    """Everything the orchestrator needs to act on one delivery; JSON-serialisable."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    kind: TriggerKind
    installation_id: int
    owner: str
    repo: str
    issue_number: int
    issue_title: str
    is_pull_request: bool
    sender_login: str
    sender_id: int
    comment_id: int | None = None
    verb: str = "run"
    instructions: str = ""
    stories: tuple[str, ...] = ()
    command_error: str | None = None

"""The one interface agents call; each wire protocol implements it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.llm.config import ModelConfig
from app.llm.types import AssistantTurn, Conversation, ToolSpec


class ModelClient(Protocol):
    """Completes a conversation with one model; raises `RetryableError` or `FatalError`."""

    @property
    def config(self) -> ModelConfig: ...

    async def complete(
        self,
        conversation: Conversation,
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int | None = None,
    ) -> AssistantTurn:
        """`max_tokens` defaults to (and is capped by) the model's `max_output_tokens`."""
        ...


def output_budget(config: ModelConfig, max_tokens: int | None) -> int:
    if max_tokens is None:
        return config.max_output_tokens
    return max(1, min(max_tokens, config.max_output_tokens))

"""Bounded retries with exponential backoff and jitter, honouring `retry-after`.

Only `RetryableError` is retried; a `FatalError` (quota, billing, auth, bad
request) propagates at once with the provider's message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from app.llm.client import ModelClient
from app.llm.config import ModelConfig
from app.llm.errors import RetryableError
from app.llm.types import AssistantTurn, Conversation, ToolSpec

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    """Total attempts including the first."""
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    """Cap on any single wait, `retry-after` included."""

    def delay(self, retry_index: int, error: RetryableError, rand: float | None = None) -> float:
        """Wait before retry number `retry_index` (0 = first retry).

        A server-given `retry-after` is waited in full (plus up to 10%), never
        less; otherwise exponential backoff with "equal jitter".
        """
        r = random.random() if rand is None else rand
        if error.retry_after is not None:
            return min(self.max_delay_s, error.retry_after * (1 + 0.1 * r))
        backoff = min(self.max_delay_s, self.base_delay_s * (2.0**retry_index))
        return backoff / 2 + backoff / 2 * r


class RetryingClient:
    """Wraps a `ModelClient`; the returned turn's `attempts` counts the tries."""

    def __init__(
        self,
        inner: ModelClient,
        policy: RetryPolicy,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"RetryingClient({self._inner!r})"

    @property
    def config(self) -> ModelConfig:
        return self._inner.config

    async def complete(
        self,
        conversation: Conversation,
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int | None = None,
    ) -> AssistantTurn:
        attempt = 1
        while True:
            try:
                turn = await self._inner.complete(conversation, tools, max_tokens=max_tokens)
            except RetryableError as exc:
                if attempt >= self._policy.max_attempts:
                    raise
                wait = self._policy.delay(attempt - 1, exc)
                log.warning(
                    "model %s attempt %d/%d failed (%s); retrying in %.2fs",
                    self.config.name,
                    attempt,
                    self._policy.max_attempts,
                    exc,
                    wait,
                )
                await self._sleep(wait)
                attempt += 1
                continue
            if attempt == 1:
                return turn
            return turn.model_copy(update={"attempts": attempt})

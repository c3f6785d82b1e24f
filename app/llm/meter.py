"""Metering model calls: the price of a turn, a conversation's usage against its budget,
and a client that reports every call (one implementation for the planner and the stories)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Protocol

from app.llm.client import ModelClient
from app.llm.config import ModelConfig
from app.llm.prices import PriceTable
from app.llm.types import AssistantTurn, Conversation, ToolSpec, Usage

Pricer = Callable[[AssistantTurn], Decimal | None]


def turn_pricer(prices: PriceTable, price_key: str) -> Pricer:
    """Cost of a turn from a price table; unknown (None) without a request time."""

    def price(turn: AssistantTurn) -> Decimal | None:
        if turn.requested_at is None:
            return None
        return prices.cost(turn.usage, price_key, turn.requested_at)

    return price


class CallRecorder(Protocol):
    """Where each completed call's tokens and cost go (the metrics store)."""

    async def model_call(self, model: str, usage: Usage, cost: Decimal | None) -> None: ...


class MeteredClient:
    """A ModelClient that records each completed call's tokens and cost, by model name."""

    def __init__(self, inner: ModelClient, recorder: CallRecorder, prices: PriceTable) -> None:
        self._inner = inner
        self._recorder = recorder
        self._price = turn_pricer(prices, inner.config.price_key)

    def __repr__(self) -> str:
        return f"MeteredClient({self._inner!r})"

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
        turn = await self._inner.complete(conversation, tools, max_tokens=max_tokens)
        await self._recorder.model_call(self._inner.config.name, turn.usage, self._price(turn))
        return turn


class UsageMeter:
    """Sums every turn; `cost` becomes None (unknown) once any turn's price is unknown."""

    def __init__(self, pricer: Pricer, model: str | None = None) -> None:
        self.pricer = pricer
        self.usage = Usage()
        self.cost: Decimal | None = Decimal(0)
        self.rounds = 0
        self.model = model

    def add(self, turn: AssistantTurn) -> None:
        self.rounds += 1
        self.usage = self.usage + turn.usage
        self.model = turn.model or self.model
        price = self.pricer(turn)
        self.cost = None if price is None or self.cost is None else self.cost + price

    def over_budget(self, who: str, max_tokens: int, max_cost_usd: Decimal) -> str | None:
        """Why the budget is exceeded (naming `who`), or None."""
        tokens = self.usage.prompt + self.usage.output
        if tokens > max_tokens:
            return f"{who} used {tokens:,} tokens (budget {max_tokens:,})"
        if self.cost is not None and self.cost > max_cost_usd:
            return f"{who} spent ${self.cost:.4f} (budget ${max_cost_usd})"
        return None

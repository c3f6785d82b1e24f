"""Usage, cost and rounds of one agent conversation, checked against its budget."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from app.llm.types import AssistantTurn, Usage

Pricer = Callable[[AssistantTurn], Decimal | None]


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

"""Model clients over httpx (no vendor SDKs), prices and metering (routing is `app.core.routing`).

Typical use::

    client = catalog.client("deepseek-flash", os.environ, http, RetryPolicy())
    turn = await client.complete(conversation, tools)
    conversation.assistant(turn)
    spent = cost(turn.usage, client.config.price_key, turn.requested_at)
"""

from __future__ import annotations

from app.llm.catalog import CatalogError, ModelCatalog, api_key_for, build_client
from app.llm.client import ModelClient
from app.llm.config import ModelConfig
from app.llm.errors import FatalError, ModelError, RetryableError
from app.llm.prices import PriceTable, cost, load_prices
from app.llm.retry import RetryingClient, RetryPolicy
from app.llm.types import (
    AssistantTurn,
    Conversation,
    ProviderState,
    StopReason,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
    UserMessage,
)

__all__ = [
    "AssistantTurn",
    "CatalogError",
    "Conversation",
    "FatalError",
    "ModelCatalog",
    "ModelClient",
    "ModelConfig",
    "ModelError",
    "PriceTable",
    "ProviderState",
    "RetryPolicy",
    "RetryableError",
    "RetryingClient",
    "StopReason",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "UserMessage",
    "api_key_for",
    "build_client",
    "cost",
    "load_prices",
]

"""The one interface agents call; each wire protocol implements it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from app.llm.config import ModelConfig
from app.llm.transport import post_json
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


@dataclass(frozen=True)
class Wire:
    """What differs between providers: the path, the auth headers, the body, the reply."""

    path: str
    headers: Callable[[str], dict[str, str]]
    build_request: Callable[[ModelConfig, Conversation, Sequence[ToolSpec], int], dict[str, Any]]
    parse_response: Callable[..., AssistantTurn]


class WireClient:
    """A `ModelClient` for one configured model over one wire protocol."""

    def __init__(
        self, wire: Wire, config: ModelConfig, api_key: str, http: httpx.AsyncClient
    ) -> None:
        self._wire = wire
        self._config = config
        self._key = api_key
        self._http = http

    def __repr__(self) -> str:  # never the key
        return f"WireClient({self._config.protocol}, {self._config.name!r})"

    @property
    def config(self) -> ModelConfig:
        return self._config

    async def complete(
        self,
        conversation: Conversation,
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int | None = None,
    ) -> AssistantTurn:
        body = self._wire.build_request(
            self._config, conversation, tools, output_budget(self._config, max_tokens)
        )
        reply = await post_json(
            self._http,
            f"{self._config.base_url}{self._wire.path}",
            headers=self._wire.headers(self._key),
            body=body,
            timeout_s=self._config.request_timeout_s,
            model=self._config.name,
            secret=self._key,
        )
        requested_at: datetime = reply.requested_at
        return self._wire.parse_response(
            reply.body, requested_at=requested_at, latency_s=reply.latency_s
        )

"""Fixtures for the model layer: an httpx client and clients aimed at a scripted server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from app.llm.catalog import build_client
from app.llm.client import ModelClient
from app.llm.config import ModelConfig
from app.llm.retry import RetryPolicy
from app.llm.types import Protocol
from testbed.models.harness import RunningModelServer

PROTOCOLS: tuple[Protocol, ...] = ("openai-chat", "openai-responses", "anthropic")
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=5.0)
API_KEY = "sk-test-0123456789"

MakeClient = Callable[..., ModelClient]


def base_url(server: RunningModelServer, protocol: Protocol) -> str:
    return server.url if protocol == "anthropic" else server.url + "/v1"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def make_client(http: httpx.AsyncClient) -> MakeClient:
    def make(
        server: RunningModelServer,
        protocol: Protocol,
        model_id: str = "test-model",
        *,
        policy: RetryPolicy = FAST_RETRY,
        timeout_s: float = 30.0,
        base: str | None = None,
    ) -> ModelClient:
        config = ModelConfig(
            name=f"{protocol}-{model_id}",
            protocol=protocol,
            base_url=base or base_url(server, protocol),
            model_id=model_id,
            api_key_env="TEST_KEY",
            max_output_tokens=1024,
            request_timeout_s=timeout_s,
        )
        return build_client(config, API_KEY, http, policy)

    return make

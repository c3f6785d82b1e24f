"""Error classification, retry-after parsing and the retry wrapper (no network)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import pytest

from app.llm.catalog import CatalogError, ModelCatalog, api_key_for
from app.llm.config import ModelConfig
from app.llm.errors import (
    FatalError,
    ModelError,
    RetryableError,
    error_from_response,
    retry_after_seconds,
)
from app.llm.retry import RetryingClient, RetryPolicy
from app.llm.types import AssistantTurn, Conversation, ToolSpec


def openai_error(type_: str, code: str | None, message: str = "msg") -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


def anthropic_error(type_: str, message: str = "msg") -> bytes:
    return json.dumps({"type": "error", "error": {"type": type_, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (429, openai_error("requests", "rate_limit_exceeded"), True),
        (429, openai_error("insufficient_quota", "insufficient_quota"), False),
        (429, openai_error("requests", "insufficient_quota"), False),
        (429, anthropic_error("rate_limit_error"), True),
        (529, anthropic_error("overloaded_error"), True),
        (500, anthropic_error("api_error"), True),
        (503, b"<html>Service Unavailable</html>", True),
        (408, b"", True),
        (409, b"", True),
        (400, openai_error("invalid_request_error", None), False),
        (401, anthropic_error("authentication_error"), False),
        (
            402,
            openai_error("unknown_error", "invalid_request_error", "Insufficient Balance"),
            False,
        ),
        (402, anthropic_error("billing_error"), False),
        (403, anthropic_error("permission_error"), False),
        (404, anthropic_error("not_found_error"), False),
    ],
)
def test_classification(status: int, body: bytes, retryable: bool) -> None:
    error = error_from_response(status, {}, body, model="m")
    assert isinstance(error, RetryableError if retryable else FatalError)
    assert error.status == status


def test_fatal_error_carries_provider_message_and_hides_the_key() -> None:
    body = openai_error(
        "invalid_request_error", "invalid_api_key", "Incorrect API key: sk-secret-123"
    )
    error = error_from_response(401, {}, body, model="gpt", secret="sk-secret-123")
    assert isinstance(error, FatalError)
    assert error.message == "Incorrect API key: ***"
    assert (error.error_type, error.code) == ("invalid_request_error", "invalid_api_key")
    assert (
        str(error) == "gpt HTTP 401 invalid_request_error/invalid_api_key: Incorrect API key: ***"
    )


def test_non_json_error_body_is_kept_as_text() -> None:
    error = error_from_response(502, {}, b"Bad Gateway", model="m")
    assert error.message == "Bad Gateway"
    empty = error_from_response(500, {}, b"", model="m")
    assert "empty body" in empty.message


def test_retry_after_headers() -> None:
    now = datetime(2026, 11, 16, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"Retry-After": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Mon, 16 Nov 2026 12:00:07 GMT"}, now) == 7.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    error = error_from_response(429, httpx.Headers({"retry-after": "3"}), b"{}", model="m")
    assert isinstance(error, RetryableError) and error.retry_after == 3.0


def test_policy_delays() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=10.0)
    plain = RetryableError("x")
    assert [policy.delay(i, plain, rand=1.0) for i in range(5)] == [1, 2, 4, 8, 10]
    assert [policy.delay(i, plain, rand=0.0) for i in range(3)] == [0.5, 1, 2]
    told = RetryableError("x", retry_after=3.0)
    assert 3.0 <= policy.delay(0, told) <= 3.3
    assert policy.delay(0, RetryableError("x", retry_after=3600)) == 10.0


class Scripted:
    """A fake inner client failing with the given errors, then answering."""

    def __init__(self, errors: list[ModelError]) -> None:
        self.errors = errors
        self.calls = 0
        self._config = ModelConfig(
            name="fake", protocol="openai-chat", base_url="x", model_id="m", api_key_env="K"
        )

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
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return AssistantTurn(text="ok")


async def test_retrying_client_retries_then_succeeds() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    inner = Scripted([RetryableError("a", retry_after=2.0), RetryableError("b")])
    client = RetryingClient(inner, RetryPolicy(5, 0.5, 30), sleep=sleep)
    turn = await client.complete(Conversation().user("x"), [])
    assert (turn.text, turn.attempts, inner.calls) == ("ok", 3, 3)
    assert 2.0 <= waits[0] <= 2.2
    assert 0.5 <= waits[1] <= 1.0
    assert client.config.name == "fake"


async def test_retrying_client_gives_up_and_never_retries_fatal() -> None:
    async def sleep(seconds: float) -> None:
        return None

    inner = Scripted([RetryableError(str(i)) for i in range(5)])
    with pytest.raises(RetryableError, match="2"):
        await RetryingClient(inner, RetryPolicy(3, 0, 0), sleep=sleep).complete(Conversation(), [])
    assert inner.calls == 3
    fatal = Scripted([FatalError("quota", status=429, code="insufficient_quota")])
    with pytest.raises(FatalError):
        await RetryingClient(fatal, RetryPolicy(3, 0, 0), sleep=sleep).complete(Conversation(), [])
    assert fatal.calls == 1


async def test_connection_error_is_retryable() -> None:
    config = ModelConfig(
        name="down",
        protocol="anthropic",
        base_url="http://127.0.0.1:9",
        model_id="m",
        api_key_env="K",
    )
    async with httpx.AsyncClient() as http:
        client = ModelCatalog([config]).client(
            "down", {"K": "key"}, http, RetryPolicy(2, 0.01, 0.01)
        )
        with pytest.raises(RetryableError, match="connection error"):
            await client.complete(Conversation().user("x"), [])


def test_catalog_and_keys() -> None:
    config = ModelConfig(
        name="flash",
        protocol="openai-chat",
        base_url="https://api.deepseek.com",
        model_id="deepseek-v4-flash",
        api_key_env="DEEPSEEK_API_KEY",
    )
    catalog = ModelCatalog([config])
    assert catalog.names == ["flash"] and "flash" in catalog and len(catalog) == 1
    assert api_key_for(config, {"DEEPSEEK_API_KEY": "sk-1"}) == "sk-1"
    with pytest.raises(CatalogError, match="DEEPSEEK_API_KEY is not set"):
        api_key_for(config, {})
    with pytest.raises(CatalogError, match=r"unknown model 'x' \(configured: flash\)"):
        catalog.get("x")
    with pytest.raises(CatalogError, match="configured twice"):
        ModelCatalog([config, config])


async def test_key_not_in_client_repr() -> None:
    config = ModelConfig(
        name="flash", protocol="openai-chat", base_url="x", model_id="m", api_key_env="K"
    )
    async with httpx.AsyncClient() as http:
        client = ModelCatalog([config]).client("flash", {"K": "sk-very-secret"}, http)
        assert "sk-very-secret" not in repr(client)

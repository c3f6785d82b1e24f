"""The configured models and the factory that turns one into a client.

Keys are looked up in a mapping passed in (normally `os.environ`, read by the
caller at startup), and only ever travel in the auth header.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import httpx

from app.llm import anthropic, openai_chat, openai_responses
from app.llm.client import ModelClient, Wire, WireClient
from app.llm.config import ModelConfig
from app.llm.retry import RetryingClient, RetryPolicy

WIRES: dict[str, Wire] = {
    "openai-chat": openai_chat.WIRE,
    "openai-responses": openai_responses.WIRE,
    "anthropic": anthropic.WIRE,
}


class CatalogError(ValueError):
    """Misconfigured model settings (duplicate name, missing key, unknown model)."""


def build_client(
    model_config: ModelConfig,
    api_key: str,
    http: httpx.AsyncClient,
    retry_policy: RetryPolicy | None = None,
) -> ModelClient:
    """A client for one model, wrapped in retries (`RetryPolicy()` by default)."""
    wire = WIRES[model_config.protocol]
    inner: ModelClient = WireClient(wire, model_config, api_key, http)
    return RetryingClient(inner, retry_policy or RetryPolicy())


def api_key_for(model_config: ModelConfig, env: Mapping[str, str]) -> str:
    key = env.get(model_config.api_key_env, "")
    if not key:
        raise CatalogError(
            f"model {model_config.name!r}: environment variable "
            f"{model_config.api_key_env} is not set"
        )
    return key


class ModelCatalog:
    """Named models from server settings."""

    def __init__(self, models: Iterable[ModelConfig]) -> None:
        self._models: dict[str, ModelConfig] = {}
        for model in models:
            if model.name in self._models:
                raise CatalogError(f"model {model.name!r} is configured twice")
            self._models[model.name] = model

    def __iter__(self) -> Iterator[ModelConfig]:
        return iter(self._models.values())

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __len__(self) -> int:
        return len(self._models)

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> ModelConfig:
        try:
            return self._models[name]
        except KeyError:
            raise CatalogError(
                f"unknown model {name!r} (configured: {', '.join(self._models) or 'none'})"
            ) from None

    def client(
        self,
        name: str,
        env: Mapping[str, str],
        http: httpx.AsyncClient,
        retry_policy: RetryPolicy | None = None,
    ) -> ModelClient:
        config = self.get(name)
        return build_client(config, api_key_for(config, env), http, retry_policy)

"""One configured model endpoint. Server settings only: repositories may pick among
these by `name` but can never add an endpoint (it would receive our key)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.llm.types import Protocol


class ModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    """Our name for it, used by routing and `.github/baro.yml`."""
    protocol: Protocol
    base_url: str
    """e.g. https://api.deepseek.com, https://api.openai.com/v1, https://api.anthropic.com"""
    model_id: str
    """The provider's model id sent on the wire."""
    api_key_env: str
    """Name of the environment variable holding the key (read when a client is built)."""
    max_output_tokens: int = Field(default=8192, gt=0)
    price_key: str = ""
    """Entry in the price table; defaults to `model_id`."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """openai-chat only: OpenAI's own models want `max_completion_tokens`."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Merged into every request body (e.g. `thinking`, `reasoning`, `temperature`)."""

    @model_validator(mode="before")
    @classmethod
    def _price_key_defaults_to_model_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("price_key") and data.get("model_id"):
            return {**data, "price_key": data["model_id"]}
        return data

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

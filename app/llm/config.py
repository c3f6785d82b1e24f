"""One configured model endpoint. Server settings only: repositories may pick among
these by `name` but can never add an endpoint (it would receive our key)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.llm.types import Protocol

EngineName = Literal["baro", "claude-code", "codex"]
"""Who drives a phase on this model: baro's own loop, or an agent CLI in the sandbox."""
AuthKind = Literal["api_key", "subscription"]
ENGINE_PROTOCOLS: dict[str, Protocol] = {"claude-code": "anthropic", "codex": "openai-responses"}
"""The one protocol each CLI speaks (Codex 0.171 refuses Chat Completions)."""


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
    engine: EngineName = "baro"
    """`claude-code` or `codex`: the phase runs that CLI in the sandbox, through the gateway."""
    auth: AuthKind = "api_key"
    """`subscription`: the secret in `api_key_env` is a Claude subscription token
    (`claude setup-token`, usually CLAUDE_CODE_OAUTH_TOKEN); Claude Code only."""

    @model_validator(mode="after")
    def _engine_speaks_protocol(self) -> ModelConfig:
        wanted = ENGINE_PROTOCOLS.get(self.engine)
        if wanted is not None and self.protocol != wanted:
            raise ValueError(
                f"model {self.name!r}: engine {self.engine} speaks {wanted}, not {self.protocol}"
            )
        if self.auth == "subscription" and self.engine != "claude-code":
            raise ValueError(
                f"model {self.name!r}: a subscription token works only with engine claude-code"
            )
        return self

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

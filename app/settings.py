"""One Settings object, read once at start-up and passed down.

Values come from `BARO_*` environment variables, optionally layered over a TOML file named
by `BARO_CONFIG` (environment wins). A bad value stops start-up with one line naming the
variable; secret values are never echoed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.core.routing import RoutingConfig
from app.llm.config import ModelConfig

ENV_PREFIX = "BARO_"
MIN_RUN_PAGE_SECRET = 32


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable, never its value."""


def public_base_url(value: str) -> str:
    """`https://host[:port][/path]` without a trailing slash; ValueError names the problem."""
    value = value.strip().rstrip("/")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("the public URL is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the public URL must start with https:// (or http://) and name a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("the public URL must not have a query, fragment or credentials")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    github_app_id: int = Field(gt=0)
    github_private_key: SecretStr | None = None
    github_private_key_file: Path | None = None
    github_webhook_secret: SecretStr = Field(min_length=1)
    github_app_slug: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    github_api_url: str = "https://api.github.com"
    github_web_url: str = "https://github.com"
    """GitHub's web host, where `/setup` registers the App (GitHub Enterprise, the testbed)."""
    public_url: str | None = None
    """The public base URL GitHub delivers webhooks to; `/setup` puts it in the manifest."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    trigger_label: str = Field(default="baro", min_length=1)

    # Operational knobs; defaults suit production.
    github_write_spacing: float = Field(default=1.0, ge=0)
    github_write_max_retries: int = Field(default=4, ge=0)
    webhook_max_body_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    delivery_dedup_seconds: int = Field(default=4 * 24 * 3600, ge=3 * 24 * 3600)
    redelivery_interval_seconds: int = Field(default=300, ge=0)
    """How often failed webhook deliveries are redelivered (app/worker/redelivery.py); 0: never."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    metrics_token: SecretStr | None = None
    """When set, `GET /metrics` requires `Authorization: Bearer <token>`."""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    """`json` for log shippers (one object per line); `text` for a terminal (the demo)."""
    config: Path | None = None
    """The TOML file named by BARO_CONFIG, if any (kept out of the runners' sandbox)."""

    # Models: named endpoints (server settings only), routing per phase, prices.
    models: list[ModelConfig] = Field(default_factory=list)
    routing: RoutingConfig | None = None
    prices_file: Path | None = None
    planner_budget_usd: Decimal = Field(default=Decimal("2.00"), gt=0)
    planner_max_rounds: int = Field(default=40, gt=0)
    auto_execute: bool = True
    max_parallel: int = Field(default=8, ge=1, le=32)
    max_stories_in_flight: int = Field(default=16, ge=1)
    """All runs together; split fairly among installations with work."""
    run_budget_usd: Decimal = Field(default=Decimal("5.00"), gt=0)
    run_stall_seconds: int = Field(default=3 * 3600, ge=60)
    """A run with no progress for this long ends as failed (nothing hangs silently)."""
    comment_debounce_seconds: float = Field(default=3.0, ge=0)
    """The first window between tracking-comment edits; it doubles per edit up to the max."""
    comment_debounce_max_seconds: float = Field(default=30.0, ge=0)
    check_run_after_seconds: float = Field(default=10.0, ge=0)
    """A run's check run follows its head once it has run this long; a shorter run gets one
    check run, with its result (two spaced writes fewer per head a short run passes)."""
    run_page_secret: SecretStr | None = None
    """Signs the run page links (`app/run_links.py`); unset: derived from the App's key."""
    run_page_days: float = Field(default=90.0, gt=0, le=3660)
    """How long a run page link works after the run was created."""

    # Runners: where mirrors and worktrees live, the sandbox, per-story budgets.
    runner_data_dir: Path = Path("/var/tmp/baro-runner")  # noqa: S108 (Fly: a volume)
    sandbox: Literal["bwrap", "none"] = "bwrap"
    bwrap_path: str = "/usr/bin/bwrap"
    sandbox_cgroup: Literal["auto", "none"] | Path = "auto"
    """How one command's total memory is capped: `auto` (a cgroup where the runner can make
    one, else a watchdog), a delegated cgroup v2 directory, or `none` (the watchdog)."""
    sandbox_memory_mib: int = Field(default=2048, gt=0)
    """All processes of one sandboxed command together (size it: concurrency x this < RAM)."""
    sandbox_write_mib: int = Field(default=2048, gt=0)
    """How much one sandboxed command may add to its worktree."""
    story_budget_usd: Decimal = Field(default=Decimal("0.50"), gt=0)
    story_max_rounds: int = Field(default=40, gt=0)
    story_lease_seconds: float = Field(default=60.0, gt=1)
    runner_concurrency: int = Field(default=2, ge=1, le=64)
    """Stories one runner process works on at once (they mostly wait on models)."""
    mirror_idle_days: float = Field(default=14.0, gt=0)
    """A repository's mirror no story used for this long is deleted from the runner's disk."""
    image_cache_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    """All unpacked images on a runner together; unused ones go, least recently used first."""
    image_idle_days: float = Field(default=7.0, gt=0)
    """An unpacked image no command used for this long is deleted (pulled again when needed)."""
    image_pull_timeout_seconds: float = Field(default=900.0, gt=0)
    image_registry_mirrors: dict[str, str] = Field(default_factory=dict)
    """Registry host → `host[:port][/prefix]` pulled from instead (a pull-through mirror)."""
    image_insecure_registries: list[str] = Field(default_factory=list)
    """Registry hosts reached without TLS verification, over HTTP if they speak no TLS."""
    image_registry_credentials: dict[str, SecretStr] = Field(default_factory=dict)
    """`user:password` (or `user:token`) per registry host, for private images."""
    engines_dir: Path | None = None
    """Where `scripts/install` put the pinned agent CLIs (None: the checkout's `.engines`)."""
    engine_timeout_seconds: float = Field(default=1800.0, gt=0)
    """One turn of an agent CLI (Claude Code, Codex) in the sandbox; past it, it is killed."""
    model_keys: dict[str, SecretStr] = Field(default_factory=dict, exclude=True)
    """API keys by model name, read from each model's `api_key_env` at start-up."""

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return public_base_url(value) if value else None

    @field_validator("sandbox_cgroup")
    @classmethod
    def _cgroup_path(cls, value: str | Path) -> str | Path:
        if isinstance(value, Path) and not value.is_absolute():
            raise ValueError("expected auto, none or an absolute path of a cgroup v2 directory")
        return value

    @field_validator("run_page_secret")
    @classmethod
    def _run_page_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_RUN_PAGE_SECRET:
            raise ValueError(f"must be at least {MIN_RUN_PAGE_SECRET} characters")
        return value

    @model_validator(mode="after")
    def _private_key_present(self) -> Settings:
        if self.github_private_key is None and self.github_private_key_file is None:
            raise ValueError("BARO_GITHUB_PRIVATE_KEY or BARO_GITHUB_PRIVATE_KEY_FILE is required")
        return self

    @model_validator(mode="after")
    def _routing_names_configured_models(self) -> Settings:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("BARO_MODELS: a model name is configured twice")
        if self.routing is not None:
            unknown = self.routing.unknown_models(names)
            if unknown:
                raise ValueError(
                    f"BARO_ROUTING: names models that are not in BARO_MODELS: {', '.join(unknown)}"
                )
        elif self.models:
            raise ValueError("BARO_ROUTING is required when BARO_MODELS is set")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def private_key_pem(self) -> str:
        """The App's private key, from the variable or the file (read when needed)."""
        if self.github_private_key is not None:
            return self.github_private_key.get_secret_value().replace("\\n", "\n")
        assert self.github_private_key_file is not None
        return self.github_private_key_file.read_text()

    @property
    def bot_login(self) -> str:
        return f"{self.github_app_slug}[bot]"


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    msg = str(error.get("msg", "invalid"))
    if not loc:
        return msg.removeprefix("Value error, ")
    name = ENV_PREFIX + loc[0].upper()
    if error.get("type") == "missing":
        return f"{name} is required but not set"
    return f"{name}: {msg}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and BARO_CONFIG) once; raise ConfigError with one clear line."""
    config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{ENV_PREFIX}CONFIG: file not found: {config_file}")
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"{ENV_PREFIX}CONFIG: {exc}") from None
    if settings.github_private_key_file is not None:
        path = settings.github_private_key_file
        if not path.is_file():
            raise ConfigError(f"{ENV_PREFIX}GITHUB_PRIVATE_KEY_FILE: file not found: {path}")
    _check_private_key(settings)
    if settings.prices_file is not None and not settings.prices_file.is_file():
        raise ConfigError(f"{ENV_PREFIX}PRICES_FILE: file not found: {settings.prices_file}")
    keys = {
        m.name: SecretStr(os.environ[m.api_key_env])
        for m in settings.models
        if os.environ.get(m.api_key_env)
    }
    return settings.model_copy(update={"model_keys": keys})


def _check_private_key(settings: Settings) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    name = (
        "GITHUB_PRIVATE_KEY"
        if settings.github_private_key is not None
        else "GITHUB_PRIVATE_KEY_FILE"
    )
    try:
        load_pem_private_key(settings.private_key_pem().encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{ENV_PREFIX}{name}: not a PEM private key") from None

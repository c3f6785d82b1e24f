"""Which configured model serves which phase, and a repository's `.github/baro.yml`.

Server settings name the defaults; a repository may re-point a phase or tier to
another *configured* model, never to a new endpoint. Parsing is pure.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field

Tier = Literal["light", "standard", "heavy"]
Phase = Literal["planner", "light", "standard", "heavy", "review"]
TIERS: tuple[Tier, ...] = get_args(Tier)
PHASES: tuple[Phase, ...] = get_args(Phase)
MAX_PARALLEL = 32


def escalate(tier: Tier) -> Tier | None:
    """The next stronger tier, or None at the top."""
    index = TIERS.index(tier)
    return TIERS[index + 1] if index + 1 < len(TIERS) else None


class RepoConfigError(ValueError):
    """A `.github/baro.yml` problem; the message starts with the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class RepoConfig(BaseModel):
    """What a repository may choose. `None` means "server default"."""

    model_config = ConfigDict(frozen=True)

    models: dict[Phase, str] = Field(default_factory=dict)
    auto_execute: bool = True
    max_parallel: int | None = None
    budget_usd: Decimal | None = None
    setup: list[str] = Field(default_factory=list)
    verify: list[str] = Field(default_factory=list)
    review: bool = True
    """`review: false` skips the review phase for this repository."""
    image: str | None = None
    """The OCI image the repository's commands run in (the runner checks the name)."""


class RoutingConfig(BaseModel):
    """Server defaults: a configured model name per phase and tier."""

    model_config = ConfigDict(frozen=True)

    planner: str
    light: str
    standard: str
    heavy: str
    review: str | None = None
    """The reviewer's model; without one the planner's (a strong model) reviews."""
    escalation: bool = True

    def model_for(self, phase: Phase) -> str:
        name: str | None = getattr(self, phase)
        if name is None:  # only `review` is optional
            return self.planner
        return name

    def tier_for_story(self, tier: Tier, attempt: int = 1) -> Tier:
        """Attempt 1 runs on the story's tier; each retry moves one tier up
        (when escalation is on), stopping at `heavy`."""
        current = tier
        for _ in range(max(0, attempt - 1) if self.escalation else 0):
            current = escalate(current) or current
        return current

    def model_for_story(self, tier: Tier, attempt: int = 1) -> str:
        """The model of the tier `tier_for_story` picks for this attempt."""
        return self.model_for(self.tier_for_story(tier, attempt))

    def for_repo(self, repo: RepoConfig) -> RoutingConfig:
        """These defaults narrowed by a repository's `models:` choices."""
        return self.model_copy(update={str(k): v for k, v in repo.models.items()})

    def unknown_models(self, server_models: Collection[str]) -> list[str]:
        """Names that are not configured models (a settings check at startup)."""
        named = [p for p in PHASES if getattr(self, p) is not None]
        return [p for p in named if self.model_for(p) not in server_models]


_KEYS = (
    "models",
    "auto_execute",
    "max_parallel",
    "budget_usd",
    "setup",
    "verify",
    "review",
    "image",
)


def parse_repo_config(yaml_text: str, server_models: Collection[str]) -> RepoConfig:
    """Validate `.github/baro.yml`; an empty file means all defaults."""
    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        raise RepoConfigError("", _yaml_problem(exc)) from None
    if data is None:
        return RepoConfig()
    if not isinstance(data, dict):
        raise RepoConfigError("", f"expected a mapping of settings, got {_kind(data)}")
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _KEYS:
            raise RepoConfigError(str(key), f"unknown setting (known: {', '.join(_KEYS)})")
        if key == "models":
            fields["models"] = _models(value, server_models)
        elif key in ("auto_execute", "review"):
            if not isinstance(value, bool):
                raise RepoConfigError(key, f"must be true or false, got {_kind(value)}")
            fields[key] = value
        elif key == "max_parallel":
            if not isinstance(value, int) or isinstance(value, bool):
                raise RepoConfigError(key, f"must be an integer, got {_kind(value)}")
            if not 1 <= value <= MAX_PARALLEL:
                raise RepoConfigError(key, f"must be between 1 and {MAX_PARALLEL}, got {value}")
            fields[key] = value
        elif key == "budget_usd":
            fields[key] = _budget(value)
        elif key == "image":
            fields[key] = _image(value)
        else:
            fields[key] = _commands(key, value)
    return RepoConfig(**fields)


def _models(value: object, server_models: Collection[str]) -> dict[Phase, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RepoConfigError("models", f"must be a mapping of phase to model, got {_kind(value)}")
    chosen: dict[Phase, str] = {}
    configured = ", ".join(server_models) or "none"
    for phase, name in value.items():
        key = f"models.{phase}"
        if phase not in PHASES:
            raise RepoConfigError(key, f"unknown phase (expected one of: {', '.join(PHASES)})")
        if not isinstance(name, str):
            raise RepoConfigError(key, f"must be a model name, got {_kind(name)}")
        if name not in server_models:
            raise RepoConfigError(key, f'unknown model "{name}" (configured: {configured})')
        chosen[phase] = name
    return chosen


def _budget(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RepoConfigError("budget_usd", f"must be a number, got {_kind(value)}")
    amount = Decimal(str(value))
    if not amount.is_finite() or amount <= 0:
        raise RepoConfigError("budget_usd", f"must be greater than 0, got {value}")
    return amount


def _image(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise RepoConfigError("image", f"must be an image name like node:22, got {_kind(value)}")
    return value


def _commands(key: str, value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise RepoConfigError(key, f"must be a list of commands, got {_kind(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise RepoConfigError(f"{key}[{index}]", f"must be a command string, got {_kind(item)}")
    return list(value)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string ("{shown}")'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"invalid YAML: {problem}"

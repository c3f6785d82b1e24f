"""Which environment a repository runs in: `app.core.environment` (pure; planning decides
it once per run and the runner follows the run record)."""

from __future__ import annotations

from app.core.environment import DEVCONTAINER_PATHS, Environment, choose_environment, parse_jsonc

__all__ = ["DEVCONTAINER_PATHS", "Environment", "choose_environment", "parse_jsonc"]

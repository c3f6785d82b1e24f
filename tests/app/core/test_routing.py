"""Routing defaults, escalation and `.github/baro.yml` parsing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.core.routing import (
    RepoConfig,
    RepoConfigError,
    RoutingConfig,
    escalate,
    parse_repo_config,
)

SERVER_MODELS = ["deepseek-flash", "claude-sonnet-5-5"]
ROUTING = RoutingConfig(
    planner="claude-sonnet-5-5",
    light="deepseek-flash",
    standard="deepseek-flash",
    heavy="claude-sonnet-5-5",
)


def test_valid_file() -> None:
    text = """
# baro settings
models:
  light: deepseek-flash
  planner: deepseek-flash
auto_execute: false
max_parallel: 8
budget_usd: 2.5
setup:
  - uv sync
verify:
  - uv run pytest -q
  - uv run ruff check .
"""
    config = parse_repo_config(text, SERVER_MODELS)
    assert config == RepoConfig(
        models={"light": "deepseek-flash", "planner": "deepseek-flash"},
        auto_execute=False,
        max_parallel=8,
        budget_usd=Decimal("2.5"),
        setup=["uv sync"],
        verify=["uv run pytest -q", "uv run ruff check ."],
    )
    routed = ROUTING.for_repo(config)
    assert routed.model_for("planner") == "deepseek-flash"
    assert routed.model_for("heavy") == "claude-sonnet-5-5"
    assert ROUTING.model_for("planner") == "claude-sonnet-5-5"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_means_defaults(text: str) -> None:
    assert parse_repo_config(text, SERVER_MODELS) == RepoConfig()


def test_single_command_string_is_a_list() -> None:
    assert parse_repo_config("verify: make test", SERVER_MODELS).verify == ["make test"]


def test_unknown_model_is_named() -> None:
    with pytest.raises(RepoConfigError) as caught:
        parse_repo_config("models:\n  light: gpt-9\n", SERVER_MODELS)
    assert str(caught.value) == (
        'models.light: unknown model "gpt-9" (configured: deepseek-flash, claude-sonnet-5-5)'
    )
    assert caught.value.key == "models.light"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_paralel: 4", "max_paralel: unknown setting"),
        ("models:\n  reviewer: deepseek-flash", "models.reviewer: unknown phase"),
        ("models: deepseek-flash", "models: must be a mapping"),
        ("models:\n  heavy: 3", "models.heavy: must be a model name, got a number (3)"),
        ("auto_execute: 1", "auto_execute: must be true or false"),
        ('auto_execute: "false"', "auto_execute: must be true or false"),
        ("max_parallel: 0", "max_parallel: must be between 1 and 32, got 0"),
        ("max_parallel: 33", "max_parallel: must be between 1 and 32, got 33"),
        ("max_parallel: true", "max_parallel: must be an integer, got a boolean"),
        ("max_parallel: 2.5", "max_parallel: must be an integer"),
        ("budget_usd: 0", "budget_usd: must be greater than 0"),
        ("budget_usd: -1", "budget_usd: must be greater than 0"),
        ('budget_usd: "5"', "budget_usd: must be a number"),
        ("budget_usd: .nan", "budget_usd: must be greater than 0"),
        ("setup: {a: b}", "setup: must be a list of commands"),
        ("verify:\n  - make\n  - 3", "verify[1]: must be a command string"),
        ("- a\n- b", "expected a mapping of settings, got a list"),
    ],
)
def test_bad_values_name_the_key(text: str, message: str) -> None:
    with pytest.raises(RepoConfigError) as caught:
        parse_repo_config(text, SERVER_MODELS)
    assert str(caught.value).startswith(message), str(caught.value)


def test_invalid_yaml_names_the_line() -> None:
    text = "auto_execute: true\nmodels:\n  light: [deepseek-flash\nverify: x\n"
    with pytest.raises(RepoConfigError) as caught:
        parse_repo_config(text, SERVER_MODELS)
    assert "invalid YAML at line" in str(caught.value)
    tab = "models:\n\tlight: x\n"
    with pytest.raises(RepoConfigError, match=r"invalid YAML at line 2"):
        parse_repo_config(tab, SERVER_MODELS)


def test_escalation_order() -> None:
    assert escalate("light") == "standard"
    assert escalate("standard") == "heavy"
    assert escalate("heavy") is None
    routing = RoutingConfig(planner="p", light="l", standard="s", heavy="h")
    assert [routing.model_for_story("light", n) for n in (1, 2, 3, 4)] == ["l", "s", "h", "h"]
    assert routing.model_for_story("heavy", 2) == "h"
    fixed = routing.model_copy(update={"escalation": False})
    assert fixed.model_for_story("light", 3) == "l"


def test_unknown_models_in_server_routing() -> None:
    routing = RoutingConfig(planner="x", light="deepseek-flash", standard="y", heavy="y")
    assert routing.unknown_models(SERVER_MODELS) == ["planner", "standard", "heavy"]
    assert ROUTING.unknown_models(SERVER_MODELS) == []
    reviewing = routing.model_copy(update={"review": "z"})
    assert reviewing.unknown_models(SERVER_MODELS) == ["planner", "standard", "heavy", "review"]


def test_the_review_phase_defaults_to_the_planners_model_and_can_be_turned_off() -> None:
    assert ROUTING.model_for("review") == ROUTING.planner
    assert ROUTING.model_copy(update={"review": "deepseek-flash"}).model_for("review") == (
        "deepseek-flash"
    )
    assert parse_repo_config("review: false\n", SERVER_MODELS).review is False
    assert parse_repo_config("", SERVER_MODELS).review is True
    chosen = parse_repo_config("models:\n  review: deepseek-flash\n", SERVER_MODELS)
    assert ROUTING.for_repo(chosen).model_for("review") == "deepseek-flash"
    with pytest.raises(RepoConfigError, match="review: must be true or false"):
        parse_repo_config("review: sometimes\n", SERVER_MODELS)

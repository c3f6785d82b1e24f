"""The run's environment in the pure core: when a run must be prepared, what the comments
say about it, and a retry after a failed preparation."""

from __future__ import annotations

import pytest

from app.core.environment import choose_environment
from app.core.report import environment_lines, render_environment_failed
from app.core.routing import RepoConfig
from app.core.run import DEFAULT_ENVIRONMENT, RunEnvironment, needs_preparation
from app.core.scheduler import RetryRefused, reset_for_retry
from tests.app.core.test_scheduler import make_run


def with_env(env: RunEnvironment | None, setup: list[str] | None = None, state: str = "running"):  # type: ignore[no-untyped-def]
    run = make_run()
    return run.model_copy(
        update={"environment": env, "repo_config": RepoConfig(setup=setup or []), "state": state}
    )


def test_a_run_is_prepared_when_it_has_an_image_or_setup() -> None:
    assert not needs_preparation(with_env(None, ["npm ci"]))  # planned before environments
    assert not needs_preparation(with_env(RunEnvironment()))  # default, no setup: start now
    assert needs_preparation(with_env(RunEnvironment(), ["npm ci"]))
    assert needs_preparation(with_env(RunEnvironment(image="node:22", source="baro.yml")))
    ready = RunEnvironment(image="node:22", source="baro.yml", state="ready")
    assert not needs_preparation(with_env(ready, ["npm ci"]))


def test_the_plan_comment_names_the_environment_and_setup() -> None:
    env = RunEnvironment(image="node:22-bookworm", source="baro.yml")
    assert environment_lines(env, ["npm ci"]) == [
        "",
        "**Environment:** image `node:22-bookworm` (from `.github/baro.yml`) · setup once per "
        "run: `npm ci`",
    ]
    chosen = choose_environment(None, '{"build": {"dockerfile": "Dockerfile"}}')
    default = RunEnvironment(image=chosen.image, source=chosen.source, note=chosen.note)
    lines = environment_lines(default)
    assert lines[1] == f"**Environment:** {DEFAULT_ENVIRONMENT}"
    assert "builds its image from a Dockerfile" in lines[2]
    assert environment_lines(None) == []


def test_a_failed_setup_is_said_with_its_output() -> None:
    env = RunEnvironment(
        state="failed",
        error='setup command "npm ci" exited with 1 in the default environment',
        error_kind="setup",
        output_tail="npm ERR! 404 left-pad",
    )
    body = render_environment_failed("r1", env)
    assert body.startswith("<!-- baro:run:r1 -->\n### ❌ The run's environment could not be")
    assert '"npm ci" exited with 1' in body and "npm ERR! 404 left-pad" in body
    assert "`setup:`" in body and "/baro retry" in body


def test_a_retry_after_a_failed_preparation_prepares_again() -> None:
    failed = RunEnvironment(image="x:1", source="baro.yml", state="failed", error="unreachable")
    run = with_env(failed, state="failed").model_copy(update={"failure": "environment: x"})
    again = reset_for_retry(run)
    assert again.state == "running" and again.failure is None
    assert again.environment is not None
    assert (again.environment.state, again.environment.generation) == ("pending", 2)
    assert again.environment.error is None
    assert needs_preparation(again)
    with pytest.raises(RetryRefused):  # a failed run whose environment was fine: as before
        reset_for_retry(with_env(RunEnvironment(state="ready"), state="failed"))

"""The console script's start-up contract, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

SECRET = "do-not-print-this-secret-value"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BARO_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_setting_stops_with_one_line() -> None:
    result = run_cli("web", BARO_GITHUB_WEBHOOK_SECRET=SECRET)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["baro-bot: configuration error: BARO_GITHUB_APP_ID is required but not set"]


def test_invalid_key_is_named_not_echoed() -> None:
    result = run_cli(
        "worker",
        BARO_GITHUB_APP_ID="1",
        BARO_GITHUB_PRIVATE_KEY=SECRET,
        BARO_GITHUB_WEBHOOK_SECRET=SECRET,
        BARO_GITHUB_APP_SLUG="baro",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "baro-bot: configuration error: BARO_GITHUB_PRIVATE_KEY: not a PEM private key"
    )
    assert SECRET not in result.stdout + result.stderr


def test_routing_must_name_configured_models() -> None:
    result = run_cli(
        "web",
        BARO_GITHUB_APP_ID="1",
        BARO_GITHUB_PRIVATE_KEY="x",
        BARO_GITHUB_WEBHOOK_SECRET=SECRET,
        BARO_GITHUB_APP_SLUG="baro",
        BARO_MODELS='[{"name": "a", "protocol": "openai-chat", "base_url": "http://x", '
        '"model_id": "m", "api_key_env": "K"}]',
        BARO_ROUTING='{"planner": "a", "light": "a", "standard": "b", "heavy": "a"}',
    )
    assert result.returncode == 2
    assert "BARO_ROUTING: names models that are not in BARO_MODELS: standard" in result.stderr


def test_help_lists_the_process_kinds() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for kind in ("web", "worker", "runner"):
        assert kind in result.stdout

"""Log lines: JSON shape, context from contextvars, and redaction of secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.logs import (
    REDACTED,
    Redactor,
    bind_log_context,
    build_handler,
    configured_secrets,
    job_context,
    log_context,
)
from app.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "whsec-0123456789-abcdef"
MODEL_KEY = "model-key-not-shaped-like-anything-42"
GH_TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


@pytest.fixture(scope="module")
def settings(pem: str) -> Settings:
    return Settings(
        github_app_id=1,
        github_private_key=SecretStr(pem),
        github_webhook_secret=SecretStr(WEBHOOK_SECRET),
        github_app_slug="baro-test",
        model_keys={"m": SecretStr(MODEL_KEY)},
    )


class Captured:
    """A real logger writing through the production handler into a buffer."""

    def __init__(self, settings: Settings, log_format: str = "json") -> None:
        self.stream = io.StringIO()
        self.logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex[:8]}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(
            build_handler("worker", log_format, configured_secrets(settings), self.stream)
        )

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]


@pytest.fixture
def captured(settings: Settings) -> Iterator[Captured]:
    cap = Captured(settings)
    yield cap
    cap.logger.handlers.clear()


def test_a_line_is_one_json_object_with_the_standard_fields(captured: Captured) -> None:
    captured.logger.info("planned %d stories", 3, extra={"cost": 0.25, "models": ["a", "b"]})
    (line,) = captured.lines()
    assert line["msg"] == "planned 3 stories"
    assert (line["level"], line["process"], line["logger"]) == (
        "INFO",
        "worker",
        captured.logger.name,
    )
    assert line["pid"] == os.getpid()
    assert line["ts"].endswith("Z")
    assert abs(datetime.fromisoformat(line["ts"]).timestamp() - datetime.now().timestamp()) < 60
    assert line["cost"] == 0.25 and line["models"] == ["a", "b"]
    assert "exc" not in line and "run" not in line


def test_exceptions_and_odd_values_still_make_one_json_line(captured: Captured) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-object"

    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        captured.logger.exception("it failed: %s", "ünïcode ✅", extra={"thing": Opaque()})
    captured.logger.info("bad format %d", "not a number")
    first, second = captured.text().splitlines()
    line = json.loads(first)
    assert line["level"] == "ERROR" and line["msg"] == "it failed: ünïcode ✅"
    assert line["exc"].startswith("Traceback") and "ValueError: boom\nsecond line" in line["exc"]
    assert line["thing"] == "opaque-object"
    assert first.isascii()
    assert "bad format" in json.loads(second)["msg"]


def test_context_is_added_and_explicit_extras_win(captured: Captured) -> None:
    with log_context(run="r1", story="S2"):
        captured.logger.info("inside")
        with log_context(attempt=2):
            captured.logger.info("nested", extra={"run": "explicit"})
        captured.logger.info("back")
    captured.logger.info("outside")
    inside, nested, back, outside = captured.lines()
    assert (inside["run"], inside["story"]) == ("r1", "S2") and "attempt" not in inside
    assert (nested["run"], nested["story"], nested["attempt"]) == ("explicit", "S2", 2)
    assert "attempt" not in back and back["run"] == "r1"
    assert not {"run", "story", "attempt"} & set(outside)


async def test_jobs_get_their_own_context_even_when_running_at_once(captured: Captured) -> None:
    both_started = asyncio.Barrier(2)

    @job_context(run="run_id", story="story_id")
    async def run_story(ctx: dict[str, Any], run_id: str, story_id: str) -> str:
        await both_started.wait()  # both jobs are inside their contexts now
        bind_log_context(installation=int(story_id[1:]))

        async def child() -> None:
            captured.logger.info("from a task the job started")

        await asyncio.create_task(child())
        captured.logger.info("job done")
        return story_id

    results = await asyncio.gather(
        asyncio.create_task(run_story({"job_id": "j1"}, "r1", "S1")),
        asyncio.create_task(run_story({"job_id": "j2"}, "r2", story_id="S2")),
    )
    assert results == ["S1", "S2"]
    captured.logger.info("after")
    lines = captured.lines()
    seen = {(x["job"], x["run"], x["story"], x["installation"]) for x in lines[:-1]}
    assert seen == {("j1", "r1", "S1", 1), ("j2", "r2", "S2", 2)}
    assert len(lines) == 5
    assert "job" not in lines[-1] and "installation" not in lines[-1]


def test_job_context_names_must_be_parameters() -> None:
    async def job(ctx: dict[str, Any], run_id: str) -> None:
        return None

    with pytest.raises(TypeError, match="no parameter story_id"):
        job_context(run="run_id", story="story_id")(job)


def test_configured_secrets_are_redacted_everywhere(
    captured: Captured, settings: Settings, pem: str
) -> None:
    key_line = pem.splitlines()[5]
    try:
        raise RuntimeError(f"auth failed with {MODEL_KEY}")
    except RuntimeError:
        captured.logger.warning(
            "signature %s did not match (%s)",
            WEBHOOK_SECRET,
            {"key": key_line},
            exc_info=True,
            stack_info=True,
            extra={"detail": {"nested": [f"x {MODEL_KEY} y"]}, "secret": WEBHOOK_SECRET},
        )
    text = captured.text()
    for secret in (WEBHOOK_SECRET, MODEL_KEY, key_line):
        assert secret not in text
    (line,) = captured.lines()
    assert line["msg"] == f"signature {REDACTED} did not match ({{'key': '{REDACTED}'}})"
    assert f"auth failed with {REDACTED}" in line["exc"]
    assert line["detail"] == {"nested": [f"x {REDACTED} y"]}
    assert line["secret"] == REDACTED
    assert "test_configured_secrets_are_redacted_everywhere" in line["stack"]


def test_secret_shaped_strings_are_redacted() -> None:
    redact = Redactor()
    basic = "eC1hY2Nlc3MtdG9rZW46Z2hzX3NlY3JldA=="
    cases = {
        f"token {GH_TOKEN} expired": f"token {REDACTED} expired",
        "pat ghp_" + "a1" * 18 + " and github_pat_11ABC_" + "x9" * 20: (
            f"pat {REDACTED} and {REDACTED}"
        ),
        f"fatal: https://x-access-token:{GH_TOKEN}@github.com/o/r.git": (
            f"fatal: https://x-access-token:{REDACTED}@github.com/o/r.git"
        ),
        "redis://:hunter2-pw@redis.internal:6379/0 down": (
            f"redis://:{REDACTED}@redis.internal:6379/0 down"
        ),
        f"Authorization: Basic {basic}": f"Authorization: Basic {REDACTED}",
        "{'authorization': 'token abcdef1234'}": f"{{'authorization': 'token {REDACTED}'}}",
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMjMifQ.c2lnbmF0dXJlLXZhbHVl": (
            f"Authorization: Bearer {REDACTED}"
        ),
        "jwt eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMjMifQ.c2lnbmF0dXJlLXZhbHVl sent": (
            f"jwt {REDACTED} sent"
        ),
        "x-api-key: sk-ant-api03-abcdefghijklmnopqrstuvwxyz": f"x-api-key: {REDACTED}",
        "key sk-proj-abcdefghijklmnopqrstuvwxyz0123 rejected": f"key {REDACTED} rejected",
        "GET /v1/models?api-key=abc123secret&x=1": f"GET /v1/models?api-key={REDACTED}&x=1",
        "POST https://api.github.com/app-manifests/a1b2c3/conversions 503": (
            f"POST https://api.github.com/app-manifests/{REDACTED}/conversions 503"
        ),
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----\nok": (
            f"key:\n{REDACTED}\nok"
        ),
        "cut: -----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC": f"cut: {REDACTED}",
    }
    for text, expected in cases.items():
        assert redact(text) == expected, text


def test_ordinary_text_is_left_alone() -> None:
    redact = Redactor(["short", "a-long-enough-secret"])
    for text in (
        "task-0123456789abcdefghijkl landed",  # "sk-" inside a word
        "run 5f2c on baro/issue-42-add-sub: 3 tokens, short answer",
        "GET https://api.github.com/repos/o/r/issues?per_page=100 200",
        "the token budget is exhausted; ghs_ prefix alone is fine",
    ):
        assert redact(text) == text
    assert redact("x a-long-enough-secret y") == f"x {REDACTED} y"


def test_longer_secrets_are_replaced_whole() -> None:
    redact = Redactor(["secret-abc", "secret-abc-and-more"])
    assert redact("secret-abc-and-more") == REDACTED


def test_configured_secrets_include_the_key_file_and_model_keys(tmp_path: Path, pem: str) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(pem)
    settings = Settings(
        github_app_id=1,
        github_private_key_file=key_file,
        github_webhook_secret=SecretStr(WEBHOOK_SECRET),
        github_app_slug="baro-test",
        model_keys={"m": SecretStr(MODEL_KEY)},
    )
    found = configured_secrets(settings)
    assert WEBHOOK_SECRET in found and MODEL_KEY in found
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    assert set(body) <= set(found)


def test_text_format_appends_the_context(settings: Settings) -> None:
    cap = Captured(settings, "text")
    with log_context(run="r9", story="S1"):
        cap.logger.info("hello %s", WEBHOOK_SECRET)
    (line,) = cap.text().splitlines()
    assert line.endswith(f"INFO {cap.logger.name}: hello {REDACTED} [run=r9 story=S1]")


def test_log_format_setting_is_validated(monkeypatch: pytest.MonkeyPatch, pem: str) -> None:
    monkeypatch.delenv("BARO_CONFIG", raising=False)
    monkeypatch.delenv("BARO_GITHUB_PRIVATE_KEY_FILE", raising=False)
    monkeypatch.setenv("BARO_GITHUB_APP_ID", "1")
    monkeypatch.setenv("BARO_GITHUB_PRIVATE_KEY", pem)
    monkeypatch.setenv("BARO_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("BARO_GITHUB_APP_SLUG", "baro-test")
    monkeypatch.delenv("BARO_LOG_FORMAT", raising=False)
    assert load_settings().log_format == "json"
    monkeypatch.setenv("BARO_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match=r"^BARO_LOG_FORMAT:"):
        load_settings()


PROGRAM = """
import logging, warnings
from app.logs import configure_logging
from app.settings import load_settings
configure_logging(load_settings(), "web")
logging.getLogger("uvicorn.error").info("Uvicorn running", extra={"color_message": "x"})
logging.getLogger("arq.worker").info("token %s", "SECRET")
warnings.warn("careful", UserWarning)
raise RuntimeError("crashed with SECRET")
"""


def test_the_process_wide_setup_turns_everything_into_json_lines(pem: str) -> None:
    """Library loggers, warnings and an uncaught exception all come out as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARO_")}
    env.update(
        BARO_GITHUB_APP_ID="1",
        BARO_GITHUB_PRIVATE_KEY=pem,
        BARO_GITHUB_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BARO_GITHUB_APP_SLUG="baro-test",
    )
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.replace("SECRET", WEBHOOK_SECRET)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(x["logger"], x["level"]) for x in lines] == [
        ("uvicorn.error", "INFO"),
        ("arq.worker", "INFO"),
        ("py.warnings", "WARNING"),
        ("baro", "CRITICAL"),
    ]
    assert all(x["process"] == "web" for x in lines)
    assert "color_message" not in lines[0]
    assert "RuntimeError: crashed with [redacted]" in lines[-1]["exc"]
    assert WEBHOOK_SECRET not in result.stderr

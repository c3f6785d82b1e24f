"""Run page links: signed per run, expiring, refused when changed in any way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr, ValidationError

from app.logs import Redactor
from app.run_links import RunLinks, run_page_key
from tests.test_readme import _settings

CREATED = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def links(days: float = 90.0, key: bytes = b"k" * 32) -> RunLinks:
    return RunLinks(key, "https://baro.example", days)


def test_a_link_opens_its_run_only_until_it_expires() -> None:
    made = links()
    url = made.url("r1", CREATED)
    assert url is not None and url.startswith("https://baro.example/runs/r1?token=")
    token = url.split("token=", 1)[1]
    assert made.url("r1", CREATED) == url  # the same link on every render
    assert made.valid("r1", token, CREATED + timedelta(days=89))
    assert not made.valid("r1", token, CREATED + timedelta(days=90, seconds=1))
    assert not made.valid("r2", token, CREATED)  # another run
    assert not links(key=b"other" * 8).valid("r1", token, CREATED)  # another server
    expires, mac = token.split(".")
    assert not made.valid("r1", f"{int(expires) + 1000}.{mac}", CREATED)  # a longer life
    assert not made.valid("r1", f"{expires}.{mac[:-1]}A", CREATED)
    for bad in (None, "", "x", token + "x", " " + token):
        assert not made.valid("r1", bad, CREATED)


def test_no_public_url_means_no_link() -> None:
    assert RunLinks(b"k", None, 1).url("r1", CREATED) is None


def test_the_key_comes_from_the_secret_or_the_app_key(pem: str) -> None:
    base = _settings(pem)
    derived = run_page_key(base)
    assert derived == run_page_key(base) and len(derived) == 32
    secret = base.model_copy(update={"run_page_secret": SecretStr("s" * 40)})
    assert run_page_key(secret) not in (derived, b"s" * 40)
    with pytest.raises(ValidationError, match="at least 32"):
        type(base).model_validate({**base.model_dump(), "run_page_secret": "short"})


def test_tokens_never_reach_a_log_line() -> None:
    made = links()
    url = made.url("r1", CREATED)
    assert url is not None
    token = url.split("token=", 1)[1]
    redact = Redactor()
    assert token not in redact(f"posted {url}")
    assert token not in redact(f"token {token} in text")

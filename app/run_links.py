"""Signed, expiring links to a run's page: whoever can read the comment can open the page.

A token is `<expiry>.<mac>`: the expiry in Unix seconds and an HMAC-SHA256 over the run id
and that expiry, keyed with the server's run-page secret. The worker puts the link in the
tracking comment, the PR body and the check run; the web process checks it and answers 404
for anything else, so the page of a private repository's run is as private as its comment.
The expiry is fixed per run (its creation plus `BARO_RUN_PAGE_DAYS`), so re-rendering a
comment gives the same link and does not count as an edit.

Neither the secret nor a token is ever logged: both are added to the log redaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from app.settings import Settings

__all__ = ["RunLinks"]

DERIVATION_LABEL = b"baro run page links v1"
_TOKEN = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


def run_page_key(settings: Settings) -> bytes:
    """`BARO_RUN_PAGE_SECRET`, or a key derived from the App's private key (which every
    process already holds), so links work without one more secret to deploy."""
    if settings.run_page_secret is not None:
        secret = settings.run_page_secret.get_secret_value().encode()
        return hmac.new(secret, DERIVATION_LABEL, hashlib.sha256).digest()
    pem = settings.private_key_pem().encode()
    return hmac.new(pem, DERIVATION_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class RunLinks:
    key: bytes
    public_url: str | None
    days: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RunLinks:
        return cls(run_page_key(settings), settings.public_url, settings.run_page_days)

    def _mac(self, run_id: str, expires: int) -> str:
        digest = hmac.new(self.key, f"{run_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def expiry(self, created_at: datetime) -> int:
        return int((created_at + timedelta(days=self.days)).timestamp())

    def token(self, run_id: str, expires: int) -> str:
        return f"{expires}.{self._mac(run_id, expires)}"

    def valid(self, run_id: str, token: str | None, now: datetime) -> bool:
        """A token this server made for this run, not yet expired (constant-time compare)."""
        match = _TOKEN.fullmatch(token or "")
        if match is None:
            return False
        expires = int(match.group(1))
        if expires <= now.timestamp():
            return False
        return hmac.compare_digest(match.group(2), self._mac(run_id, expires))

    def path(self, run_id: str, created_at: datetime, suffix: str = "") -> str:
        token = self.token(run_id, self.expiry(created_at))
        return f"/runs/{quote(run_id)}{suffix}?token={token}"

    def url(self, run_id: str, created_at: datetime) -> str | None:
        """The page's public address, or None when `BARO_PUBLIC_URL` is not set (no link)."""
        if self.public_url is None:
            return None
        return self.public_url + self.path(run_id, created_at)

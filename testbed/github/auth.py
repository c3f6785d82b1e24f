"""GitHub App authentication as api.github.com checks it: RS256 App JWTs and `ghs_` tokens.

A client that gets its JWT claims or token handling wrong fails here the same way it would
against GitHub (401 with GitHub's body), so auth bugs surface in tests, not in production.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from testbed.github.errors import GitHubError, bad_credentials, forbidden_integration, not_found
from testbed.github.state import App, GitHubState, InstallationToken, Repo

MAX_JWT_LIFETIME = 600  # GitHub: exp at most 10 minutes ahead
CLOCK_SKEW = 60  # githubkit back-dates iat by 60 s

EXP_MESSAGE = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
    "which the assertion expires"
)
EXP_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
IAT_MESSAGE = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion "
    "was issued"
)
UNDECODABLE = "A JSON web token could not be decoded"


@dataclass(frozen=True)
class Identity:
    """Who is calling: the App itself (JWT) or one of its installations (token)."""

    kind: Literal["app", "installation"]
    app: App
    token: InstallationToken | None = None

    @property
    def label(self) -> str:
        if self.token is not None:
            return f"installation:{self.token.installation.id}"
        return f"app:{self.app.id}"


def split_authorization(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if not value:
        return None
    return scheme.lower(), value.strip()


def verify_jwt(state: GitHubState, raw: str) -> App:
    """The App a JWT was signed by; 401 unless RS256-signed by its key with sane iat/exp."""
    try:
        header = jwt.get_unverified_header(raw)
        unverified: dict[str, Any] = jwt.decode(raw, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise bad_credentials(UNDECODABLE) from exc
    if header.get("alg") != "RS256":
        raise bad_credentials(UNDECODABLE)
    app = state.app_by_issuer(unverified.get("iss"))
    if app is None:
        raise bad_credentials("'Issuer' claim ('iss') must be an Integer")
    try:
        claims: dict[str, Any] = jwt.decode(
            raw,
            app.public_key_pem,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as exc:
        raise bad_credentials(UNDECODABLE) from exc
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool) or iat > now + CLOCK_SKEW:
        raise bad_credentials(IAT_MESSAGE)
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
        raise bad_credentials(EXP_MESSAGE)
    if exp - iat > MAX_JWT_LIFETIME + CLOCK_SKEW or exp > now + MAX_JWT_LIFETIME + 30:
        raise bad_credentials(EXP_TOO_FAR)
    return app


def token_identity(state: GitHubState, value: str) -> Identity:
    token = state.lookup_token(value)
    if token is None or token.expired:
        raise bad_credentials()
    return Identity("installation", token.installation.app, token)


def authenticate(state: GitHubState, header: str | None) -> Identity | None:
    """Identity from an Authorization header; None when absent; 401 when wrong or expired."""
    parts = split_authorization(header)
    if parts is None:
        if header:
            raise bad_credentials()
        return None
    scheme, value = parts
    if scheme == "token" or (scheme == "bearer" and value.startswith(("ghs_", "ghu_"))):
        return token_identity(state, value)
    if scheme == "bearer":
        return Identity("app", verify_jwt(state, value))
    if scheme == "basic":
        secret = basic_password(value)
        if secret is None:
            raise bad_credentials()
        return token_identity(state, secret)
    raise bad_credentials()


def basic_password(encoded: str) -> str | None:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, password = decoded.partition(":")
    return password if sep else None


def require_app(identity: Identity | None) -> App:
    """For `/app...` endpoints: only the App's JWT will do."""
    if identity is None:
        raise GitHubError(
            401,
            "A JSON web token could not be decoded",
            documentation_url="https://docs.github.com/rest",
        )
    if identity.kind != "app":
        raise bad_credentials(UNDECODABLE)
    return identity.app


def require_token(
    identity: Identity | None, repo: Repo, permission: str | tuple[str, ...], level: str
) -> InstallationToken:
    """An installation token that covers `repo` (else 404) with `permission` >= `level`."""
    if identity is None:
        raise GitHubError(401, "Requires authentication")
    if identity.token is None:
        raise forbidden_integration()
    if not identity.token.covers(repo):
        raise not_found()
    names = (permission,) if isinstance(permission, str) else permission
    if not any(identity.token.allows(name, level) for name in names):
        raise forbidden_integration()
    return identity.token

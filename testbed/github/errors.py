"""GitHub's error bodies, raised from state and routes alike so both speak the same shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DOCS = "https://docs.github.com/rest"


class GitHubError(Exception):
    """An HTTP error rendered like api.github.com does (message, documentation_url, status)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Sequence[dict[str, Any] | str] | None = None,
        documentation_url: str = DOCS,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.errors = errors
        self.documentation_url = documentation_url
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.errors, self.documentation_url)


def error_body(
    status: int,
    message: str,
    errors: Sequence[dict[str, Any] | str] | None = None,
    documentation_url: str = DOCS,
) -> dict[str, Any]:
    """The JSON GitHub sends with a non-2xx answer; 422s carry an `errors` list."""
    body: dict[str, Any] = {"message": message}
    if errors is not None:
        body["errors"] = list(errors)
    body["documentation_url"] = documentation_url
    body["status"] = str(status)
    return body


def not_found() -> GitHubError:
    return GitHubError(404, "Not Found")


def bad_credentials(message: str = "Bad credentials") -> GitHubError:
    return GitHubError(401, message)


def forbidden_integration() -> GitHubError:
    return GitHubError(403, "Resource not accessible by integration")


def validation_failed(*errors: dict[str, Any], message: str = "Validation Failed") -> GitHubError:
    return GitHubError(422, message, errors=[*errors])

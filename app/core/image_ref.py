"""Image names as people write them (`node:22`), made explicit (`docker.io/library/node:22`).

The grammar and the Docker Hub defaults are those of the distribution project's reference
package, which every registry client shares, so a name means here what it means to
`docker pull`. A name is checked before anything runs with it: it ends up in skopeo's argv.
Pure, so planning (on the worker) and the runner read names the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class BadReference(ValueError):
    """Not an image name; the message says what is wrong with it."""

    kind = "bad-reference"


DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]{{1,5}})?")
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
MAX_NAME = 255


@dataclass(frozen=True)
class ImageRef:
    """`registry/repository` with a tag, a digest, or both (the digest then decides)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def at(self, digest: str) -> ImageRef:
        """The same name pinned to `digest`."""
        return ImageRef(self.registry, self.repository, self.tag, digest)

    def pinned(self) -> str:
        """`registry/repository@digest` (or `:tag`): what skopeo is given."""
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or 'latest'}"


def parse_reference(text: str) -> ImageRef:
    """Normalise `text`; `BadReference` says what is wrong with it."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    if not text or text != text.strip() or any(c.isspace() or ord(c) < 32 for c in text):
        raise BadReference(f'"{shown}" is not an image name (it is empty or holds spaces)')
    if text.startswith(("-", "/")) or "://" in text:
        raise BadReference(f'"{shown}" is not an image name (expected e.g. node:22)')
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise BadReference(f'"{shown}": the digest must be sha256:<64 hex digits>')
    first, slash, remainder = rest.partition("/")
    if slash and (("." in first or ":" in first) or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise BadReference(f'"{shown}": "{first}" is not a registry host')
        registry, path = first.lower(), remainder
    else:
        registry, path = DOCKER_HUB, rest
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise BadReference(f'"{shown}": "{tag}" is not a valid tag')
    if path != path.lower():
        raise BadReference(f'"{shown}": repository names must be lowercase')
    parts = path.split("/")
    if not all(_PATH_PART.fullmatch(p) for p in parts):
        raise BadReference(f'"{shown}": "{path}" is not a valid repository name')
    if registry == DOCKER_HUB and len(parts) == 1:
        path = f"library/{path}"
    if len(f"{registry}/{path}") > MAX_NAME:
        raise BadReference(f'"{shown}": the name is longer than {MAX_NAME} characters')
    if tag is None and not digest:
        tag = "latest"
    return ImageRef(registry, path, tag, digest or None)


def check_registry_host(host: str) -> str:
    """A setting's registry host (`ghcr.io`, `127.0.0.1:5000`), lowercased."""
    if not _DOMAIN.fullmatch(host):
        raise ValueError(f"not a registry host: {host!r}")
    return DOCKER_HUB if host.lower() in _HUB_ALIASES else host.lower()


def check_mirror(target: str) -> tuple[str, str]:
    """A mirror setting `host[:port][/prefix]` as (host, prefix)."""
    host, _, prefix = target.partition("/")
    if prefix and not all(_PATH_PART.fullmatch(p) for p in prefix.split("/")):
        raise ValueError(f"not a registry path prefix: {target!r}")
    return check_registry_host(host), prefix


__all__ = [
    "DOCKER_HUB",
    "BadReference",
    "ImageRef",
    "check_mirror",
    "check_registry_host",
    "parse_reference",
]

"""Why an image cannot be used, in words for the repository's maintainer.

The message goes into the tracking comment as it is: it names the image and, where the
network is at fault, the registry host, and never holds a credential or a runner path.
"""

from __future__ import annotations

from app.core import image_ref as core_image_ref


class ImageError(Exception):
    """An image could not be resolved, pulled or unpacked; nothing half-made is kept."""

    kind = "image"


class BadReference(ImageError, core_image_ref.BadReference):
    kind = "bad-reference"


class ImageNotFound(ImageError):
    kind = "not-found"


class Unauthorized(ImageError):
    kind = "unauthorized"


class RegistryUnreachable(ImageError):
    kind = "unreachable"

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


class NoPlatform(ImageError):
    kind = "no-platform"


class NoShell(ImageError):
    kind = "no-shell"


class TooLarge(ImageError):
    kind = "too-large"


class DiskFull(ImageError):
    kind = "disk-full"


class PullFailed(ImageError):
    """Anything else skopeo or umoci reported, or a timeout."""

    kind = "pull-failed"


__all__ = [
    "BadReference",
    "DiskFull",
    "ImageError",
    "ImageNotFound",
    "NoPlatform",
    "NoShell",
    "PullFailed",
    "RegistryUnreachable",
    "TooLarge",
    "Unauthorized",
]

"""OCI images as the read-only root of a repository's sandboxed commands.

`choose_environment` decides which image a repository runs in (`image:` in baro.yml, else
its devcontainer's image, else the runner's default environment); `ImageStore.use` pulls,
unpacks and caches it by digest, and keeps it on disk while the caller runs commands in it.
"""

from __future__ import annotations

from runner.images.choice import DEVCONTAINER_PATHS, Environment, choose_environment
from runner.images.errors import (
    BadReference,
    DiskFull,
    ImageError,
    ImageNotFound,
    NoPlatform,
    NoShell,
    PullFailed,
    RegistryUnreachable,
    TooLarge,
    Unauthorized,
)
from runner.images.reference import ImageRef, parse_reference
from runner.images.store import (
    Image,
    ImageConfig,
    ImageOptions,
    ImageStore,
    Platform,
    SweptImages,
    sweep_images,
)

__all__ = [
    "DEVCONTAINER_PATHS",
    "BadReference",
    "DiskFull",
    "Environment",
    "Image",
    "ImageConfig",
    "ImageError",
    "ImageNotFound",
    "ImageOptions",
    "ImageRef",
    "ImageStore",
    "NoPlatform",
    "NoShell",
    "Platform",
    "PullFailed",
    "RegistryUnreachable",
    "SweptImages",
    "TooLarge",
    "Unauthorized",
    "choose_environment",
    "parse_reference",
    "sweep_images",
]

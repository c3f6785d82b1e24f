"""Image names, as the runner's errors know them: `app.core.image_ref` (pure, shared with
planning), with a bad name raised as the image store's `BadReference`."""

from __future__ import annotations

from app.core import image_ref
from app.core.image_ref import DOCKER_HUB, ImageRef, check_mirror, check_registry_host
from runner.images.errors import BadReference


def parse_reference(text: str) -> ImageRef:
    """`app.core.image_ref.parse_reference`; `BadReference` (an `ImageError`) says why not."""
    try:
        return image_ref.parse_reference(text)
    except image_ref.BadReference as exc:
        raise BadReference(str(exc)) from None


__all__ = ["DOCKER_HUB", "ImageRef", "check_mirror", "check_registry_host", "parse_reference"]

"""Which environment a repository's commands run in, from what the repository says.

`image:` in `.github/baro.yml` wins; without it, the `image` of the repository's
devcontainer (many repositories already have one for Codespaces and editors); without
either, the runner's default environment. Devcontainers that build their image (`build`,
`dockerFile`, Docker Compose) are not supported: the runner does not build images, it
says so and uses the default. Pure: the caller reads the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from app.core.image_ref import BadReference, parse_reference

DEVCONTAINER_PATHS = (".devcontainer/devcontainer.json", ".devcontainer.json")
"""Where a devcontainer is looked for, in this order (the spec's two single-file places)."""
_DEFAULT = "the default environment"


@dataclass(frozen=True)
class Environment:
    """The image to use, or None for the runner's default environment; `note` says why a
    devcontainer was passed over (for the tracking comment)."""

    image: str | None
    source: Literal["baro.yml", "devcontainer", "default"]
    note: str | None = None


def choose_environment(
    baro_image: str | None,
    devcontainer_json: str | None,
    devcontainer_path: str = DEVCONTAINER_PATHS[0],
) -> Environment:
    """`baro_image` is baro.yml's `image:`; `devcontainer_json` the devcontainer file's text
    (None when the repository has none)."""
    if baro_image:
        return Environment(baro_image, "baro.yml")
    if devcontainer_json is None:
        return Environment(None, "default")
    where = f"`{devcontainer_path}`"
    try:
        data = parse_jsonc(devcontainer_json)
    except ValueError as exc:
        return Environment(None, "default", f"{where} is not valid JSON ({exc}): using {_DEFAULT}")
    if not isinstance(data, dict):
        return Environment(None, "default", f"{where} is not a JSON object: using {_DEFAULT}")
    image = data.get("image")
    if isinstance(image, str) and image.strip():
        if "${" in image:
            return Environment(
                None, "default", f"{where} names its image with a variable: using {_DEFAULT}"
            )
        try:
            parse_reference(image.strip())
        except BadReference as exc:
            return Environment(None, "default", f"{where}: {exc}: using {_DEFAULT}")
        return Environment(image.strip(), "devcontainer")
    if "dockerComposeFile" in data:
        how = "with Docker Compose"
    elif "build" in data or "dockerFile" in data or "dockerfile" in data:
        how = "from a Dockerfile"
    else:
        return Environment(None, "default", f"{where} names no image: using {_DEFAULT}")
    return Environment(
        None,
        "default",
        f"{where} builds its image {how}, which baro does not support: using {_DEFAULT}"
        " (set `image:` in `.github/baro.yml` to choose one)",
    )


def parse_jsonc(text: str) -> object:
    """JSON with comments (`//`, `/* */`) and trailing commas, as devcontainer.json allows."""
    return json.loads(_strip(text))


def _strip(text: str) -> str:
    """The text with comments blanked out (line numbers kept) and trailing commas dropped."""
    out: list[str] = []
    i, n = 0, len(text)
    pending_comma: int | None = None  # index in `out` of a comma that may be trailing
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            pending_comma = None
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated /* comment")
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        elif c == ",":
            pending_comma = len(out)
            out.append(c)
            i += 1
        elif c in "}]":
            if pending_comma is not None:
                out[pending_comma] = ""
            pending_comma = None
            out.append(c)
            i += 1
        else:
            if not c.isspace():
                pending_comma = None
            out.append(c)
            i += 1
    return "".join(out)


__all__ = ["DEVCONTAINER_PATHS", "Environment", "choose_environment", "parse_jsonc"]

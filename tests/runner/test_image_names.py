"""Image names, the environment a repository chooses, and how tool failures are worded."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from app.core.routing import RepoConfigError, parse_repo_config
from runner.bwrap import HOME, TMPDIR
from runner.images import (
    BadReference,
    DiskFull,
    ImageNotFound,
    ImageOptions,
    PullFailed,
    RegistryUnreachable,
    Unauthorized,
    choose_environment,
    parse_reference,
)
from runner.images.choice import parse_jsonc
from runner.images.rootfs import MOUNT_DIRS
from runner.images.tools import ToolFailure, explain, run_tool
from runner.sandbox import WORKDIR

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node:22", "docker.io/library/node:22"),
        ("node", "docker.io/library/node:latest"),
        ("python:3.13", "docker.io/library/python:3.13"),
        ("golang:1.24", "docker.io/library/golang:1.24"),
        ("library/node:22", "docker.io/library/node:22"),
        ("index.docker.io/library/node:22", "docker.io/library/node:22"),
        ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
        ("ghcr.io/acme/tools:v1.2.3", "ghcr.io/acme/tools:v1.2.3"),
        ("GHCR.io/acme/tools:v1", "ghcr.io/acme/tools:v1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:dev", "localhost:5000/app:dev"),
        ("127.0.0.1:5000/a/b/c:x", "127.0.0.1:5000/a/b/c:x"),
        (
            "mcr.microsoft.com/devcontainers/python:3.12",
            "mcr.microsoft.com/devcontainers/python:3.12",
        ),
        (f"node@{DIGEST}", f"docker.io/library/node@{DIGEST}"),
        (f"node:22@{DIGEST}", f"docker.io/library/node:22@{DIGEST}"),
        ("my_org/my-app__x:1", "docker.io/my_org/my-app__x:1"),
    ],
)
def test_names_are_normalised_like_docker_pull(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_a_digest_pins_and_a_tag_defaults_to_latest() -> None:
    ref = parse_reference(f"ghcr.io/acme/app:1@{DIGEST}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "ghcr.io",
        "acme/app",
        "1",
        DIGEST,
    )
    assert ref.pinned() == f"ghcr.io/acme/app@{DIGEST}"
    assert parse_reference("ghcr.io/acme/app").pinned() == "ghcr.io/acme/app:latest"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("node 22", "spaces"),
        ("Node:22", "lowercase"),
        ("node:", "not a valid tag"),
        ("node:-x", "not a valid tag"),
        ("node@sha256:abc", "digest"),
        ("node@md5:" + "a" * 32, "digest"),
        ("-rm", "not an image name"),
        ("https://ghcr.io/acme/app", "not an image name"),
        ("ghcr.io//app", "not a valid repository name"),
        ("ghcr.io/acme/app/", "not a valid repository name"),
        ("acme/../app", "not a valid repository name"),
        ("a" * 300, "longer than"),
        ("node\n22", "spaces"),
    ],
)
def test_bad_names_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BadReference, match=says):
        parse_reference(text)


# ---- choosing the environment ------------------------------------------------------------


DEVCONTAINER = """// Made by the VS Code wizard
{
  "name": "acme",
  /* the image: Microsoft's Python one */
  "image": "mcr.microsoft.com/devcontainers/python:3.12",  // pinned later
  "features": {"ghcr.io/devcontainers/features/node:1": {"version": "lts",},},
  "postCreateCommand": "pip install -e . // not a comment",
}
"""


def test_baro_yml_image_wins_over_the_devcontainer() -> None:
    env = choose_environment("node:22", DEVCONTAINER)
    assert (env.image, env.source, env.note) == ("node:22", "baro.yml", None)


def test_the_devcontainer_image_is_used_without_baro_yml_image() -> None:
    env = choose_environment(None, DEVCONTAINER)
    assert env.image == "mcr.microsoft.com/devcontainers/python:3.12"
    assert (env.source, env.note) == ("devcontainer", None)


def test_without_either_the_default_environment() -> None:
    assert choose_environment(None, None) == choose_environment("", None)
    env = choose_environment(None, None)
    assert (env.image, env.source, env.note) == (None, "default", None)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '{"build": {"dockerfile": "Dockerfile"}}',
            "from a Dockerfile, which baro does not support",
        ),
        ('{"dockerFile": "../Dockerfile"}', "from a Dockerfile"),
        ('{"dockerComposeFile": "compose.yml", "service": "app"}', "with Docker Compose"),
        ('{"name": "x"}', "names no image"),
        ('{"image": "${localEnv:IMAGE}"}', "with a variable"),
        ('{"image": "Not An Image"}', "spaces"),
        ('{"image": "node:22",', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("/* never closed", "not valid JSON"),
    ],
)
def test_devcontainers_that_cannot_be_used_fall_back_with_a_note(text: str, says: str) -> None:
    env = choose_environment(None, text, ".devcontainer.json")
    assert (env.image, env.source) == (None, "default")
    assert env.note is not None and says in env.note, env.note
    assert env.note.startswith("`.devcontainer.json`") and "default environment" in env.note


def test_jsonc_keeps_strings_intact() -> None:
    text = '{"a": "x // y", "b": "/* z */", "c": "q\\"//", "d": [1, 2,], }'
    assert parse_jsonc(text) == {"a": "x // y", "b": "/* z */", "c": 'q"//', "d": [1, 2]}


def test_jsonc_errors_keep_their_line_numbers() -> None:
    with pytest.raises(ValueError, match="line 4"):
        parse_jsonc('{\n/* one\ntwo */\n "a": oops}')


def test_baro_yml_takes_an_image_name() -> None:
    assert parse_repo_config("image: node:22\n", []).image == "node:22"
    assert parse_repo_config("verify: [make]\n", []).image is None
    for bad in ("image: 3\n", "image: ''\n", "image: [node]\n", "image: node 22\n"):
        with pytest.raises(RepoConfigError, match=r"^image: must be an image name"):
            parse_repo_config(bad, [])


# ---- options and tool failures -----------------------------------------------------------


def test_options_refuse_malformed_settings_without_echoing_secrets() -> None:
    with pytest.raises(ValueError, match="user:password") as caught:
        ImageOptions(credentials={"ghcr.io": SecretStr("only-a-token-xyz")})
    assert "only-a-token-xyz" not in str(caught.value)
    with pytest.raises(ValueError, match="not a registry"):
        ImageOptions(mirrors={"docker.io": "https://mirror.example"})
    with pytest.raises(ValueError, match="registry host"):
        ImageOptions(insecure=frozenset({"bad host"}))
    ImageOptions(mirrors={"docker.io": "mirror.example:5000/hub"})


def test_the_mount_points_made_in_an_image_are_those_the_sandbox_uses() -> None:
    for path in (HOME, TMPDIR, WORKDIR, "/proc", "/dev"):
        assert path.lstrip("/") in MOUNT_DIRS, path


REF = parse_reference("ghcr.io/acme/app:1")


def _fatal(message: str) -> ToolFailure:
    return ToolFailure("skopeo", 1, f'time="2026-01-01T00:00:00Z" level=fatal msg="{message}"\n')


@pytest.mark.parametrize(
    ("stderr", "kind", "says"),
    [
        (
            "reading manifest 1 in ghcr.io/acme/app: manifest unknown: manifest unknown",
            ImageNotFound,
            "image ghcr.io/acme/app:1 not found: registry ghcr.io has no tag '1'",
        ),
        (
            "reading manifest 1 in ghcr.io/acme/app: unauthorized: authentication required",
            Unauthorized,
            "the runner has no credentials for ghcr.io",
        ),
        (
            "reading manifest 1 in docker.io/acme/app: requested access to the resource is denied",
            Unauthorized,
            "private (or does not exist)",
        ),
        (
            'pinging container registry ghcr.io: Get "https://ghcr.io/v2/": dial tcp: lookup'
            " ghcr.io: no such host",
            RegistryUnreachable,
            "registry ghcr.io is unreachable for image ghcr.io/acme/app:1 (no such host)",
        ),
        (
            "writing blob: write /data/images/x: no space left on device",
            DiskFull,
            "the runner's disk is full",
        ),
        (
            "reading signatures: open /var/lib/containers/sigstore/x/sig-1: permission denied",
            PullFailed,
            "permission denied",
        ),
        ("something new went wrong", PullFailed, "failed: something new went wrong"),
    ],
)
def test_tool_failures_are_worded_for_the_maintainer(stderr: str, kind: type, says: str) -> None:
    error = explain(_fatal(stderr), REF, "ghcr.io", has_credentials=False)
    assert isinstance(error, kind)
    assert says in str(error), str(error)


def test_rejected_credentials_are_told_apart_from_missing_ones() -> None:
    failure = _fatal(
        "reading manifest 1 in ghcr.io/acme/app: unauthorized: authentication required"
    )
    error = explain(failure, REF, "ghcr.io", has_credentials=True)
    assert isinstance(error, Unauthorized) and "refused the runner's credentials" in str(error)


def test_a_digest_full_of_401_is_not_unauthorized() -> None:
    failure = _fatal(f"reading manifest sha256:{'401' * 21}4 in ghcr.io/acme/app: manifest unknown")
    assert isinstance(explain(failure, REF, "ghcr.io", has_credentials=False), ImageNotFound)


async def test_a_tool_that_runs_too_long_is_killed_with_its_children() -> None:
    with pytest.raises(ToolFailure, match="exit status None") as caught:
        await run_tool(
            ["sh", "-c", "sleep 60 & sleep 60"], env={"PATH": "/usr/bin:/bin"}, timeout=0.2
        )
    assert "timed out after 0.2 s" in caught.value.stderr
    error = explain(caught.value, REF, "ghcr.io", has_credentials=False)
    assert isinstance(error, PullFailed) and "timed out" in str(error)
    await asyncio.sleep(0)


def test_image_settings_reach_the_store_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.settings import Settings
    from runner.images import ImageStore

    monkeypatch.setenv("BARO_IMAGE_REGISTRY_CREDENTIALS", '{"GHCR.io": "bot:tok-123"}')
    monkeypatch.setenv("BARO_IMAGE_REGISTRY_MIRRORS", '{"docker.io": "mirror.internal:5000/hub"}')
    monkeypatch.setenv("BARO_IMAGE_INSECURE_REGISTRIES", '["mirror.internal:5000"]')
    monkeypatch.setenv("BARO_IMAGE_CACHE_MAX_BYTES", str(5 << 30))
    settings = Settings(
        github_app_id=1,
        github_private_key="k",  # type: ignore[arg-type]
        github_webhook_secret="s",  # type: ignore[arg-type]
        github_app_slug="baro-bot",
        runner_data_dir="/var/tmp/baro-test-data",  # type: ignore[arg-type]
    )
    assert "tok-123" not in repr(settings)
    store = ImageStore.from_settings(settings)
    assert store.root == settings.runner_data_dir / "images"
    assert store.options.max_bytes == 5 << 30
    assert store.options.idle_seconds == 7 * 86400
    assert store.options.credentials["ghcr.io"].get_secret_value() == "bot:tok-123"
    source = store.source(parse_reference("node:22"))
    assert (source.host, source.name, source.insecure) == (
        "mirror.internal:5000",
        "mirror.internal:5000/hub/library/node",
        True,
    )
    ghcr = store.source(parse_reference("ghcr.io/acme/app:1"))
    assert (ghcr.name, ghcr.insecure, ghcr.has_credentials) == ("ghcr.io/acme/app", False, True)

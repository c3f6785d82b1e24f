"""The run's environment as planning chooses it from the default branch's files."""

from __future__ import annotations

from app.core.routing import RepoConfig
from app.worker.planning import _environment


def reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    async def read(path: str) -> str | None:
        return files.get(path)

    return read


async def test_baro_yml_wins_over_the_devcontainer() -> None:
    files = {".devcontainer/devcontainer.json": '{"image": "python:3.13"}'}
    env = await _environment(RepoConfig(image="node:22"), reader(files))
    assert (env.image, env.source, env.state) == ("node:22", "baro.yml", "pending")


async def test_the_devcontainer_image_then_the_default() -> None:
    files = {".devcontainer.json": '// editors\n{"image": "python:3.13",}'}
    env = await _environment(RepoConfig(), reader(files))
    assert (env.image, env.source) == ("python:3.13", "devcontainer")
    env = await _environment(RepoConfig(), reader({}))
    assert (env.image, env.source, env.note) == (None, "default", None)
    built = {".devcontainer/devcontainer.json": '{"build": {"dockerfile": "Dockerfile"}}'}
    env = await _environment(RepoConfig(), reader(built))
    assert env.image is None and env.note is not None and "Dockerfile" in env.note

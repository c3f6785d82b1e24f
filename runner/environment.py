"""A run's environment on this runner: its image held on disk and the sandbox view that
every command of the run gets (story tests, `verify:`, the agent's bash, `setup:`, the final
verification), plus the repository's package-manager caches for `setup:`.

The run record says which image (chosen at planning) and, once prepared, which digest: every
runner uses exactly that digest, so a tag moving during a run changes nothing. Without an
image the view is the runner's own system (the default environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from app.core.run import DEFAULT_ENVIRONMENT, Run
from runner.bwrap import HOME, Mount
from runner.images import ImageStore, parse_reference
from runner.images.rootfs import resolve_inside
from runner.process import CommandResult
from runner.sandbox import NoSandbox, Sandbox, SandboxView

CACHE_MOUNT = f"{HOME}/.cache"
"""Where a repository's package caches appear in `setup:` commands (HOME is a tmpfs)."""
CACHE_ENV = {
    "npm_config_cache": f"{CACHE_MOUNT}/npm",
    "YARN_CACHE_FOLDER": f"{CACHE_MOUNT}/yarn",
    "npm_config_store_dir": f"{CACHE_MOUNT}/pnpm-store",
    "UV_CACHE_DIR": f"{CACHE_MOUNT}/uv",
    "PIP_CACHE_DIR": f"{CACHE_MOUNT}/pip",
    "CARGO_HOME": f"{CACHE_MOUNT}/cargo",
    "GOMODCACHE": f"{CACHE_MOUNT}/go/mod",
    "GOCACHE": f"{CACHE_MOUNT}/go/build",
    "UV_LINK_MODE": "copy",
}
"""npm, yarn, pnpm, uv, pip, cargo and go keep their downloads in the bound cache, so a
second run of the repository installs from it (uv copies: its cache is not in the tree)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CACHE_LOCKS: dict[Path, asyncio.Lock] = {}


@dataclass(frozen=True)
class RunEnvironment:
    """The environment one run's commands use on this runner, while `Environments.use` holds
    its image."""

    view: SandboxView
    digest: str | None
    cache_dir: Path

    @property
    def name(self) -> str:
        return self.view.name

    def setup_view(self) -> SandboxView:
        """The view for `setup:`: the repository's package caches bound in, writable."""
        env = {**self.view.env, **CACHE_ENV}
        return replace(self.view, env=env, mounts=(Mount(self.cache_dir, CACHE_MOUNT, True),))

    def sandbox(self, inner: Sandbox | NoSandbox, *, setup: bool = False) -> ViewSandbox:
        return ViewSandbox(inner, self.setup_view() if setup else self.view)


class ViewSandbox:
    """A sandbox whose every command runs in one view (what the agent's tools and the
    verification get, so none of them can run outside the run's environment)."""

    def __init__(self, inner: Sandbox | NoSandbox, view: SandboxView) -> None:
        self.inner = inner
        self.view = view

    async def run(
        self,
        command: str,
        *,
        cwd: Path,
        timeout: float,
        network: bool | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
    ) -> CommandResult:
        # One command at a time per package cache in this process: each is lent to its
        # command's uid (as root), and two setups of one repository must not interleave.
        cached = [m.source for m in self.view.mounts if m.writable]
        async with contextlib.AsyncExitStack() as held:
            for path in cached:
                await held.enter_async_context(_CACHE_LOCKS.setdefault(path, asyncio.Lock()))
            return await self.inner.run(
                command,
                cwd=cwd,
                timeout=timeout,
                network=network,
                env=env,
                mounts=mounts,
                view=self.view,
            )

    async def self_check(self, scratch_parent: Path | None = None) -> None:
        await self.inner.self_check(scratch_parent)


class Environments:
    """Images and package caches under the runner's data directory."""

    def __init__(self, data_dir: Path, images: ImageStore) -> None:
        self.data_dir = data_dir
        self.images = images
        self.caches = data_dir / "caches"

    @contextlib.asynccontextmanager
    async def use(self, run: Run) -> AsyncIterator[RunEnvironment]:
        """The run's environment, its image pulled if this runner lacks it (an
        `ImageError` says why it cannot be), kept on disk until the block ends."""
        cache = self.cache_dir(run.owner, run.repo)
        env = run.environment
        if env is None or env.image is None:
            yield RunEnvironment(SandboxView(name=DEFAULT_ENVIRONMENT), None, cache)
            return
        reference = env.image
        if env.digest is not None:
            reference = str(parse_reference(env.image).at(env.digest))
        async with self.images.use(reference) as image:
            view = SandboxView(
                root=image.rootfs,
                env=dict(image.config.env),
                shell=shell_of(image.rootfs),
                name=f"image {env.image}",
            )
            yield RunEnvironment(view, image.digest, cache)

    def cache_dir(self, owner: str, repo: str) -> Path:
        """`<data>/caches/<owner>/<repo>`: one repository's caches, kept across runs (and
        seen only by that repository's `setup:` commands)."""
        parent = self.caches / _safe(owner.lower())
        path = parent / _safe(repo.lower())
        for directory in (self.caches, parent):
            directory.mkdir(mode=0o711, exist_ok=True)
            directory.chmod(0o711)
        path.mkdir(mode=0o700, exist_ok=True)
        return path


def shell_of(rootfs: Path) -> str:
    """`/bin/bash` when the image has it (what commands are written for), else `/bin/sh`
    (the image store refuses images without one)."""
    target = resolve_inside(rootfs, "/bin/bash")
    if target is not None:
        with contextlib.suppress(OSError):
            st = os.lstat(target)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                return "/bin/bash"
    return "/bin/sh"


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)[:100] or "_"


__all__ = [
    "CACHE_ENV",
    "CACHE_MOUNT",
    "Environments",
    "RunEnvironment",
    "ViewSandbox",
    "shell_of",
]

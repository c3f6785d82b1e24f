"""Where repository code and model-chosen commands run: a bubblewrap sandbox per command.

A command sees a read-only system, its worktree (writable, at `/workspace`, which is also its
cwd), a private `/tmp` and HOME, no network unless asked, new pid/ipc/uts/net/user namespaces,
a scrubbed environment and kernel limits; a wall-clock timeout kills all of it. When the
runner is root, each command also runs as a fresh unprivileged uid (the kernel ignores the
process limit for root, and root-owned files stay out of reach), and the worktree is lent to
that uid for the duration of the command.

`NoSandbox` is the operator's explicit opt-out (`BARO_SANDBOX=none`) for trusted local
development: same limits, timeout and environment scrubbing, no isolation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from runner.bwrap import HOME, TMPDIR, Layout, bwrap_argv, generated_files
from runner.limits import GiB, Limits, MiB
from runner.ownership import chown_tree
from runner.process import CommandResult, Spawn, run_process
from runner.safe_env import command_env
from runner.sandbox_check import SandboxUnavailable, check_bwrap, check_confinement

__all__ = [
    "CommandResult",
    "CommandSandbox",
    "Limits",
    "NoSandbox",
    "Sandbox",
    "SandboxPolicy",
    "SandboxUnavailable",
    "make_sandbox",
]

log = logging.getLogger(__name__)

WORKDIR = "/workspace"
# Host directories that must never be bound wholesale: they hold other repositories, the
# App's key, config and the runner's own files.
FORBIDDEN_BINDS = frozenset(
    {"/", "/root", "/home", "/work", "/var", "/tmp", "/etc", "/run", "/proc", "/sys", "/dev"}  # noqa: S108
)
# A fresh uid per command is drawn from here when the runner is root: far above the ranges
# distributions and subuid maps hand out.
DEFAULT_UID_RANGE = (2_000_000_000, 2_100_000_000)


@dataclass(frozen=True)
class SandboxPolicy:
    """How commands are confined. Paths in `hidden_paths` (data dir, key, config) are checked
    to be invisible by `self_check` and may never be bound."""

    limits: Limits = field(default_factory=Limits)
    extra_ro_binds: tuple[Path, ...] = ()
    extra_path: tuple[str, ...] = ()
    hidden_paths: tuple[Path, ...] = ()
    network: bool = False
    bwrap_path: str = "/usr/bin/bwrap"
    head_bytes: int = 8 * 1024
    tail_bytes: int = 8 * 1024
    tmp_size_bytes: int = 1 * GiB
    """Size of each of /tmp and HOME (tmpfs: memory, on top of the memory cap's processes)."""
    shm_size_bytes: int = 64 * MiB
    """Size of /dev/shm, the only writable place in /dev."""
    uid_range: tuple[int, int] = DEFAULT_UID_RANGE

    def __post_init__(self) -> None:
        hidden = [_absolute(p, "hidden path") for p in self.hidden_paths]
        for bind in self.extra_ro_binds:
            path = _absolute(bind, "read-only bind")
            if str(path) in FORBIDDEN_BINDS:
                raise ValueError(f"refusing to bind {path} into the sandbox wholesale")
            for secret in hidden:
                if secret.is_relative_to(path) or path.is_relative_to(secret):
                    raise ValueError(f"read-only bind {path} overlaps hidden path {secret}")
        low, high = self.uid_range
        if not 0 < low < high:
            raise ValueError("uid_range must be (low, high) with 0 < low < high")


class CommandSandbox(Protocol):
    """What the agent tools and verification need from either implementation."""

    async def run(
        self,
        command: str,
        *,
        cwd: Path,
        timeout: float,
        network: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...

    async def self_check(self, scratch_parent: Path | None = None) -> None: ...


def _absolute(path: Path, what: str) -> Path:
    if not path.is_absolute():
        raise ValueError(f"{what} {path} must be absolute")
    return path.resolve()


def _worktree(cwd: Path, hidden: tuple[Path, ...]) -> Path:
    """The resolved worktree, refusing anything that would expose more than one repository."""
    path = _absolute(cwd, "worktree")
    if not path.is_dir():
        raise ValueError(f"worktree {path} is not a directory")
    if str(path) in FORBIDDEN_BINDS:
        raise ValueError(f"refusing to use {path} as a worktree")
    for secret in hidden:
        if secret.resolve().is_relative_to(path):
            raise ValueError(f"worktree {path} contains hidden path {secret}")
    return path


def _data_fds(files: Mapping[str, bytes]) -> dict[str, int]:
    """A pipe per generated file, already filled and closed for writing (they are tiny)."""
    fds: dict[str, int] = {}
    try:
        for dest, content in files.items():
            read_fd, write_fd = os.pipe()
            fds[dest] = read_fd
            try:
                os.write(write_fd, content)
            finally:
                os.close(write_fd)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


class Sandbox:
    """Runs commands under bubblewrap; construct once per runner process."""

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy()
        self._locks: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()

    async def run(
        self,
        command: str,
        *,
        cwd: Path,
        timeout: float,
        network: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run `command` with `/bin/bash -c` in the worktree `cwd`, seen inside as /workspace.

        Commands on one worktree are serialised, since each lends the worktree to its uid.
        """
        policy = self.policy
        worktree = _worktree(cwd, policy.hidden_paths)
        cmd_env = command_env(home=HOME, tmpdir=TMPDIR, extra_path=policy.extra_path, extra=env)
        layout = Layout(
            worktree=worktree,
            workdir=WORKDIR,
            network=policy.network if network is None else network,
            extra_ro_binds=tuple(p.resolve() for p in policy.extra_ro_binds),
            tmp_size_bytes=policy.tmp_size_bytes,
            shm_size_bytes=policy.shm_size_bytes,
        )
        async with self._lent(worktree) as uid:
            fds = _data_fds(generated_files())
            try:
                argv = bwrap_argv(
                    policy.bwrap_path, layout, data_fds=fds, env=cmd_env, command=command
                )
                spawn = Spawn(
                    argv=argv,
                    env=cmd_env,
                    cwd=Path("/"),
                    limits=policy.limits,
                    uid=uid,
                    gid=uid,
                    pass_fds=tuple(fds.values()),
                )
                return await run_process(
                    spawn,
                    timeout=timeout,
                    head_bytes=policy.head_bytes,
                    tail_bytes=policy.tail_bytes,
                )
            finally:
                for fd in fds.values():
                    os.close(fd)

    @asynccontextmanager
    async def _lent(self, worktree: Path) -> AsyncIterator[int | None]:
        """Hold the worktree's lock; as root, lend it to a fresh uid and take it back after."""
        lock = self._locks.get(worktree)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[worktree] = lock
        async with lock:
            if os.geteuid() != 0:
                yield None
                return
            low, high = self.policy.uid_range
            uid = low + secrets.randbelow(high - low)
            await asyncio.to_thread(chown_tree, worktree, uid, uid)
            try:
                yield uid
            finally:
                await asyncio.to_thread(chown_tree, worktree, os.geteuid(), os.getegid())

    async def self_check(self, scratch_parent: Path | None = None) -> None:
        """Prove at start-up that commands are confined; raise SandboxUnavailable if not.

        Pass the directory worktrees will live in as `scratch_parent`, so that the check
        also proves the sandbox user can reach it.
        """
        await check_bwrap(self.policy.bwrap_path)

        async def run(command: str, worktree: Path) -> CommandResult:
            return await self.run(command, cwd=worktree, timeout=30)

        await check_confinement(run, self.policy.hidden_paths, scratch_parent)


class NoSandbox:
    """No isolation at all: only for trusted local development, never for public repos."""

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy()
        log.warning(
            "SANDBOX DISABLED (BARO_SANDBOX=none): repository code and model-written commands "
            "run WITHOUT isolation, with the runner's files and network in reach. Use this "
            "only for trusted local development."
        )

    async def run(
        self,
        command: str,
        *,
        cwd: Path,
        timeout: float,
        network: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run `command` with `/bin/bash -c` in `cwd`; `network` is ignored (never isolated)."""
        policy = self.policy
        worktree = _worktree(cwd, policy.hidden_paths)
        home = Path(tempfile.mkdtemp(prefix="baro-home-"))
        try:
            cmd_env = command_env(
                home=str(home), tmpdir=str(home), extra_path=policy.extra_path, extra=env
            )
            spawn = Spawn(
                argv=["/bin/bash", "-c", command],
                env=cmd_env,
                cwd=worktree,
                limits=policy.limits,
            )
            return await run_process(
                spawn, timeout=timeout, head_bytes=policy.head_bytes, tail_bytes=policy.tail_bytes
            )
        finally:
            with suppress(OSError):
                shutil.rmtree(home)

    async def self_check(self, scratch_parent: Path | None = None) -> None:
        """Only proves that commands can be started at all."""
        scratch = Path(tempfile.mkdtemp(prefix="baro-sandbox-check-", dir=scratch_parent))
        try:
            result = await self.run("true", cwd=scratch, timeout=30)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start /bin/bash: {exc}") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if result.exit_code != 0:
            raise SandboxUnavailable(f"`true` failed: {result.output}")


def make_sandbox(
    mode: Literal["bwrap", "none"], policy: SandboxPolicy | None = None
) -> Sandbox | NoSandbox:
    """The implementation the operator chose; the setting is read by the caller."""
    if mode == "bwrap":
        return Sandbox(policy)
    if mode == "none":
        return NoSandbox(policy)
    raise ValueError(f"unknown sandbox mode {mode!r}; expected 'bwrap' or 'none'")

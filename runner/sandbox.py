"""Where repository code and model-chosen commands run: a bubblewrap sandbox per command.

A command sees a read-only system, its worktree (writable, at `/workspace`, which is also its
cwd), a private sized `/tmp`, HOME and `/dev/shm`, no network unless asked, new
pid/ipc/uts/net/user namespaces, a scrubbed environment and kernel limits; a wall-clock
timeout kills all of it. When the runner is root, each command also runs as a fresh
unprivileged uid (the kernel ignores the process limit for root, and root-owned files stay
out of reach), and the worktree is lent to that uid for the duration of the command.

Per command, not per process: one memory cap for everything it starts (a cgroup, else a
watchdog: `runner/cgroups.py`, `runner/memwatch.py`) and a cap on how much it may add to the
worktree (`runner/diskcap.py`). A command over either is killed or failed with a message
saying so.

The invariant other code builds on: **no process of a command's sandbox is alive outside
`Sandbox.run`** (`runner/pidns.py`). `run` returns only after the command's PID namespace
(and cgroup) is empty, and only then takes the worktree back; if the processes will not die
it raises `SandboxProcessesAlive`, leaves the worktree as it is, and refuses that worktree
from then on (`require_quiet` lets other code check before it touches one).

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
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from runner.bwrap import HOME, TMPDIR, Layout, Mount, bwrap_argv, generated_files
from runner.cgroups import CgroupChoice, CgroupError, CgroupParent, CommandCgroup, resolve
from runner.diskcap import GrowthWatch, disk_usage, growth_message
from runner.limits import GiB, Limits, MiB
from runner.memwatch import DEFAULT_INTERVAL_SECONDS
from runner.ownership import lend_tree
from runner.pidns import SETTLE_TIMEOUT_SECONDS, SandboxProcessesAlive, abandon, require_quiet
from runner.process import CommandResult, Spawn, run_process
from runner.safe_env import DEFAULT_PATH, check_extra_env, command_env
from runner.sandbox_check import SandboxUnavailable, check_bwrap, check_confinement
from runner.supervise import CommandSupervisor, with_limit

__all__ = [
    "CommandResult",
    "CommandSandbox",
    "Limits",
    "Mount",
    "NoSandbox",
    "Sandbox",
    "SandboxPolicy",
    "SandboxProcessesAlive",
    "SandboxUnavailable",
    "SandboxView",
    "make_sandbox",
    "require_quiet",
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
MAX_UID = 2**31 - 1  # bubblewrap cannot map a uid above this into the sandbox


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
    memory_total_bytes: int = 2 * GiB
    """All of one command's processes together (Limits.memory_bytes is per process)."""
    cgroup: CgroupChoice = "auto"
    """How the total is enforced: `auto` (a cgroup where one can be made, else the
    watchdog), a delegated cgroup v2 directory, or `none` (the watchdog)."""
    watchdog_interval: float = DEFAULT_INTERVAL_SECONDS
    write_limit_bytes: int = 2 * GiB
    """How much one command may add to its worktree."""
    disk_reserve_bytes: int = 256 * MiB
    """Free space under which the worktree is measured while a command runs."""
    settle_timeout: float = SETTLE_TIMEOUT_SECONDS
    """How long a finished command's processes may take to die before the runner gives up."""

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
        if not 0 < low < high <= MAX_UID:
            raise ValueError(f"uid_range must be (low, high) with 0 < low < high <= {MAX_UID}")
        for name in ("tmp_size_bytes", "shm_size_bytes", "memory_total_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxPolicy.{name} must be positive")
        if self.write_limit_bytes <= 0 or self.watchdog_interval <= 0:
            raise ValueError("write_limit_bytes and watchdog_interval must be positive")
        if isinstance(self.cgroup, Path):
            _absolute(self.cgroup, "cgroup")
        elif self.cgroup not in ("auto", "none"):
            raise ValueError("cgroup must be 'auto', 'none' or an absolute path")


@dataclass(frozen=True)
class SandboxView:
    """Where one run's commands run (`runner.environment` makes it): an unpacked image's
    root file system as the read-only `/` (None: the runner's own system), the image's
    environment variables under ours, the shell, and mounts of its own (the repository's
    package caches, for `setup:`)."""

    root: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    shell: str = "/bin/bash"
    mounts: tuple[Mount, ...] = ()
    name: str = "the default environment"
    """How messages name it (`image node:22`)."""


# Set by the sandbox for every command; an image's value for these is ignored.
_OURS = frozenset({"HOME", "TMPDIR", "PWD", "HOSTNAME", "USER", "LOGNAME", "SHELL", "TERM"})


def view_env(view: SandboxView | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The image's variables (what looks like a credential, or is ours to set, left out),
    then the caller's extras on top."""
    merged: dict[str, str] = {}
    for name, value in (view.env if view is not None else {}).items():
        if name in _OURS:
            continue
        try:
            check_extra_env({name: value})
        except ValueError:
            continue  # e.g. GPG_KEY in the python images: not needed to run anything
        merged[name] = value
    merged.update(extra or {})
    return merged


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
        mounts: Sequence[Mount] = (),
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


def _checked_mounts(
    mounts: Sequence[Mount], worktree: Path, hidden: tuple[Path, ...]
) -> tuple[Mount, ...]:
    """Mounts that expose only what they name: never a forbidden directory wholesale, a
    hidden path, the worktree or a place the sandbox itself needs."""
    checked = []
    for mount in mounts:
        source = _absolute(mount.source, "mount source")
        if str(source) in FORBIDDEN_BINDS or not mount.dest.startswith("/"):
            raise ValueError(f"refusing to mount {source} at {mount.dest!r}")
        if mount.dest in ("/", WORKDIR, "/proc", "/dev", "/usr", "/etc") or ".." in mount.dest:
            raise ValueError(f"refusing to mount over {mount.dest!r}")
        if source.is_relative_to(worktree) or worktree.is_relative_to(source):
            raise ValueError(f"mount {source} overlaps the worktree {worktree}")
        for secret in hidden:
            secret = secret.resolve()
            if secret.is_relative_to(source) or source.is_relative_to(secret):
                raise ValueError(f"mount {source} overlaps hidden path {secret}")
        checked.append(Mount(source, mount.dest, mount.writable))
    return tuple(checked)


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


@dataclass
class _Lease:
    """A worktree held for one command: the uid it is lent to and its disk usage."""

    uid: int | None
    used_before: int
    used_after: int | None = None


class Sandbox:
    """Runs commands under bubblewrap; construct once per runner process."""

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy()
        self._locks: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cgroup: tuple[CgroupParent | None, str] | None = None

    async def memory_cap(self) -> tuple[CgroupParent | None, str]:
        """The cgroup parent commands get their cgroup under (None: the watchdog), and why
        there is none. Resolved once; an unusable explicit cgroup raises SandboxUnavailable."""
        if self._cgroup is None:
            try:
                self._cgroup = await asyncio.to_thread(resolve, self.policy.cgroup)
            except CgroupError as exc:
                raise SandboxUnavailable(str(exc)) from exc
        return self._cgroup

    async def describe_memory_cap(self) -> str:
        parent, why = await self.memory_cap()
        cap = f"{self.policy.memory_total_bytes // MiB} MiB per command"
        if parent is not None:
            return f"{cap}, enforced by {parent.describe()}"
        return (
            f"{cap}, enforced by a watchdog summing the processes' Pss every "
            f"{self.policy.watchdog_interval:g} s (no cgroup: {why})"
        )

    async def run(
        self,
        command: str,
        *,
        cwd: Path,
        timeout: float,
        network: bool | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        view: SandboxView | None = None,
    ) -> CommandResult:
        """Run `command` with `/bin/bash -c` in the worktree `cwd`, seen inside as /workspace.

        Commands on one worktree are serialised, since each lends the worktree to its uid.
        `mounts` add host paths (writable ones are lent with the worktree). With a `view`,
        in its image, with its environment, shell and mounts. When this returns or raises,
        no process of the command is alive.
        """
        policy = self.policy
        worktree = _worktree(cwd, policy.hidden_paths)
        view_mounts = view.mounts if view is not None else ()
        mounts = _checked_mounts((*view_mounts, *mounts), worktree, policy.hidden_paths)
        image = view is not None and view.root is not None
        if image:
            # The image's PATH (or the usual one), none of the runner's own directories.
            merged = view_env(view, env)
            merged.setdefault("PATH", DEFAULT_PATH)
            cmd_env = command_env(home=HOME, tmpdir=TMPDIR, extra=merged)
        else:
            cmd_env = command_env(
                home=HOME, tmpdir=TMPDIR, extra_path=policy.extra_path, extra=view_env(view, env)
            )
        layout = Layout(
            worktree=worktree,
            workdir=WORKDIR,
            network=policy.network if network is None else network,
            # With an image, the image is the whole system: nothing of the runner's is bound.
            extra_ro_binds=() if image else tuple(p.resolve() for p in policy.extra_ro_binds),
            tmp_size_bytes=policy.tmp_size_bytes,
            shm_size_bytes=policy.shm_size_bytes,
            mounts=mounts,
            root=view.root if view is not None else None,
            shell=view.shell if view is not None else "/bin/bash",
        )
        parent, _ = await self.memory_cap()
        writable = tuple(m.source for m in mounts if m.writable)
        async with self._lent(worktree, writable) as lease:
            growth = GrowthWatch(
                worktree, lease.used_before, policy.write_limit_bytes, policy.disk_reserve_bytes
            )
            result = await self._supervised(
                command, timeout, layout, cmd_env, lease, parent, growth
            )
            if lease.uid is None and growth.dropped_past_cap():
                lease.used_after = (await asyncio.to_thread(disk_usage, worktree)).bytes
        after = lease.used_before if lease.used_after is None else lease.used_after
        grown = after - lease.used_before
        if grown > policy.write_limit_bytes and result.limit_exceeded is None:
            result = with_limit(
                result, growth_message(grown, policy.write_limit_bytes, killed=False)
            )
        return result

    async def _supervised(
        self,
        command: str,
        timeout: float,
        layout: Layout,
        cmd_env: dict[str, str],
        lease: _Lease,
        parent: CgroupParent | None,
        growth: GrowthWatch,
    ) -> CommandResult:
        policy = self.policy
        group = None
        if parent is not None:
            group = await asyncio.to_thread(
                CommandCgroup.create,
                parent,
                memory_bytes=policy.memory_total_bytes,
                processes=policy.limits.processes,
            )
        supervisor = CommandSupervisor(
            info_fds=os.pipe(),
            cgroup=group,
            memory_cap=policy.memory_total_bytes,
            watchdog_interval=policy.watchdog_interval if group is None else None,
            growth=growth,
            settle_timeout=policy.settle_timeout,
        )
        fds: dict[str, int] = {}
        try:
            fds = _data_fds(generated_files())
            info_fd = supervisor.info_write_fd
            argv = bwrap_argv(
                policy.bwrap_path,
                layout,
                data_fds=fds,
                env=cmd_env,
                command=command,
                info_fd=info_fd,
            )
            spawn = Spawn(
                argv=argv,
                env=cmd_env,
                cwd=Path("/"),
                limits=policy.limits,
                uid=lease.uid,
                gid=lease.uid,
                pass_fds=(*fds.values(), info_fd),
                cgroup_procs=group.procs_files if group is not None else (),
            )
            result = await run_process(
                spawn,
                timeout=timeout,
                head_bytes=policy.head_bytes,
                tail_bytes=policy.tail_bytes,
                supervisor=supervisor,
            )
        finally:
            for fd in fds.values():
                os.close(fd)
            await supervisor.settle()
        if supervisor.exceeded is not None:
            result = with_limit(result, supervisor.exceeded)
        return result

    @asynccontextmanager
    async def _lent(self, worktree: Path, also: tuple[Path, ...] = ()) -> AsyncIterator[_Lease]:
        """Hold the worktree's lock; as root, lend it to a fresh uid and take it back after.

        Measures its disk usage on the way (free for root: the ownership walks visit every
        entry). Never takes back a worktree whose sandbox may still be alive.
        """
        lock = self._locks.get(worktree)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[worktree] = lock
        async with lock:
            require_quiet(worktree)
            if os.geteuid() != 0:
                usage = await asyncio.to_thread(disk_usage, worktree)
                try:
                    yield _Lease(None, usage.bytes)
                except SandboxProcessesAlive:
                    abandon(worktree)
                    raise
                return
            low, high = self.policy.uid_range
            uid = low + secrets.randbelow(high - low)
            lent = await asyncio.to_thread(lend_tree, worktree, uid, uid)
            for path in also:
                await asyncio.to_thread(lend_tree, path, uid, uid)
            lease = _Lease(uid, lent.used_bytes)

            async def take_back() -> None:
                back = await asyncio.to_thread(lend_tree, worktree, os.geteuid(), os.getegid())
                for path in also:
                    await asyncio.to_thread(lend_tree, path, os.geteuid(), os.getegid())
                lease.used_after = back.used_bytes

            try:
                yield lease
            except SandboxProcessesAlive:
                abandon(worktree)
                raise
            except BaseException:
                await take_back()
                raise
            await take_back()

    async def self_check(self, scratch_parent: Path | None = None) -> None:
        """Prove at start-up that commands are confined; raise SandboxUnavailable if not.

        Pass the directory worktrees will live in as `scratch_parent`, so that the check
        also proves the sandbox user can reach it. Logs how the memory cap is enforced.
        """
        await check_bwrap(self.policy.bwrap_path)
        log.info("sandbox memory cap: %s", await self.describe_memory_cap())

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
        mounts: Sequence[Mount] = (),
        view: SandboxView | None = None,
    ) -> CommandResult:
        """Run `command` with `/bin/bash -c` in `cwd`; `network` is ignored (never isolated).
        Mounts cannot be honoured without a sandbox: a command that needs them is refused
        (a view's image and cache mounts are simply not used: there is no other root)."""
        if mounts:
            raise SandboxUnavailable("mounts (agent engines) need the bubblewrap sandbox")
        policy = self.policy
        worktree = _worktree(cwd, policy.hidden_paths)
        env = view_env(view, env) if view is not None and view.root is None else env
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

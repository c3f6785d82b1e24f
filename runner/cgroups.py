"""One memory cap for everything a command starts: a cgroup per command, where one can be made.

RLIMIT_AS binds each process alone, so N processes may use N times the cap. A cgroup binds
them together. The runner chooses a mechanism once, at start-up (`resolve`), from
`BARO_SANDBOX_CGROUP`:

- `auto` tries, in order: cgroup v2 where the runner's own cgroup is delegated to it
  (writable, with the memory controller); cgroup v1 where the runner may make children of
  its own memory cgroup (and of its pids cgroup, if it may); else none.
- a path: a delegated cgroup v2 subtree the operator prepared (see the README); an error at
  start-up if it does not work.
- `none`: no cgroup.

Per command, v2 sets memory.max, memory.swap.max=0, memory.oom.group=1 (one OOM kill ends
the whole command) and pids.max, and ends it with cgroup.kill; v1 sets memory.limit_in_bytes
(and memory.memsw.limit_in_bytes, so no swap) and pids.max, and is ended through the
command's PID namespace. Without a cgroup, `runner/memwatch.py` bounds the total instead.
The child joins its cgroups between fork and exec (`Spawn.cgroup_procs`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runner.process import join_cgroups

log = logging.getLogger(__name__)

CgroupChoice = Literal["auto", "none"] | Path
PROC_SELF = Path("/proc/self")
RUNNER_LEAF = "baro-runner"
"""Under cgroup v2 the runner moves itself into this leaf of its delegated cgroup, since a
cgroup that hands controllers to children may not hold processes itself."""
COMMAND_PREFIX = "baro-cmd-"
EXTRA_PIDS = 4
"""pids.max headroom for the two bwrap processes around the command."""


class CgroupError(RuntimeError):
    """An explicitly configured cgroup cannot be used; the message says why."""


@dataclass(frozen=True)
class CgroupParent:
    """Where per-command cgroups are made: one directory (v2), or memory and pids (v1)."""

    version: Literal[1, 2]
    memory: Path
    pids: Path | None

    def describe(self) -> str:
        if self.version == 2:
            return f"cgroup v2 under {self.memory}"
        pids = f", pids under {self.pids}" if self.pids else ", no pids cgroup"
        return f"cgroup v1: memory under {self.memory}{pids}"


@dataclass(frozen=True)
class Mount:
    root: str
    point: Path
    fstype: str
    options: frozenset[str]


def _mounts() -> list[Mount]:
    found = []
    for line in (PROC_SELF / "mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point = fields[4].replace("\\040", " ")
        found.append(Mount(fields[3], Path(point), tail[0], frozenset(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller (v1) or "" (v2) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in (PROC_SELF / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name.removeprefix("name=")] = path
    return paths


def _dir(mount: Mount, path: str) -> Path | None:
    """The directory of cgroup `path` under `mount`, if the mount shows it."""
    root = mount.root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    return mount.point / path[len(root) :].lstrip("/")


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _writable(directory: Path, *files: str) -> bool:
    return os.access(directory, os.W_OK | os.X_OK) and all(
        os.access(directory / name, os.W_OK) for name in files
    )


def _controllers(directory: Path, which: str) -> set[str]:
    try:
        return set((directory / which).read_text().split())
    except OSError:
        return set()


def _enable(directory: Path) -> None:
    """Hand memory and pids (when available) to `directory`'s children."""
    wanted = {"memory", "pids"} & _controllers(directory, "cgroup.controllers")
    missing = wanted - _controllers(directory, "cgroup.subtree_control")
    if missing:
        _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(missing)))


def _probe(parent: CgroupParent) -> None:
    """Make a command cgroup, start a process in it, remove it: proves the whole path."""
    group = CommandCgroup.create(parent, memory_bytes=64 * 1024 * 1024, processes=8)
    try:
        done = subprocess.run(
            ["/bin/true"],
            preexec_fn=lambda: join_cgroups(group.procs_files),
            check=False,
            env={},
        )
        if done.returncode != 0:
            raise OSError("a process could not join the cgroup")
    finally:
        group.remove()


def _v2_delegated(mount: Mount, own: str) -> tuple[CgroupParent | None, str]:
    directory = _dir(mount, own)
    if directory is None:
        return None, f"the runner's cgroup {own} is not under {mount.point}"
    if directory.name == RUNNER_LEAF:
        directory = directory.parent  # moved there by an earlier resolve of this process
    if "memory" not in _controllers(directory, "cgroup.controllers"):
        return None, f"{directory} has no memory controller (not delegated)"
    if not _writable(directory, "cgroup.procs", "cgroup.subtree_control"):
        return None, f"{directory} is not writable by the runner (not delegated)"
    try:
        _enable(directory)
        return CgroupParent(2, directory, directory), ""
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            return None, f"cannot enable the memory controller in {directory}: {exc}"
    # The runner's cgroup holds processes (the runner at least): move into a leaf, retry.
    leaf = directory / RUNNER_LEAF
    try:
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _enable(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            _write(directory / "cgroup.procs", str(os.getpid()))
            leaf.rmdir()
        if exc.errno == errno.EBUSY:
            return None, f"other processes share the runner's cgroup {directory}"
        return None, f"cannot move the runner into {leaf}: {exc}"
    return CgroupParent(2, directory, directory), ""


def _v1_children(mounts: list[Mount], own: dict[str, str]) -> tuple[CgroupParent | None, str]:
    def hierarchy(controller: str) -> Path | None:
        for mount in mounts:
            if mount.fstype == "cgroup" and controller in mount.options and controller in own:
                return _dir(mount, own[controller])
        return None

    memory = hierarchy("memory")
    if memory is None:
        return None, "no cgroup v1 memory hierarchy"
    if not _writable(memory):
        return None, f"{memory} is not writable by the runner"
    pids = hierarchy("pids")
    if pids is not None and not _writable(pids):
        pids = None
    return CgroupParent(1, memory, pids), ""


def _auto() -> tuple[CgroupParent | None, str]:
    mounts = _mounts()
    own = _own_paths()
    reasons = []
    if "" in own:
        for mount in mounts:
            if mount.fstype == "cgroup2":
                parent, why = _v2_delegated(mount, own[""])
                if parent is not None:
                    return parent, ""
                reasons.append(f"v2: {why}")
                break
    parent, why = _v1_children(mounts, own)
    if parent is not None:
        return parent, ""
    reasons.append(f"v1: {why}")
    return None, "; ".join(reasons)


def _explicit(directory: Path) -> CgroupParent:
    if not (directory / "cgroup.controllers").is_file():
        raise CgroupError(f"BARO_SANDBOX_CGROUP: {directory} is not a cgroup v2 directory")
    if "memory" not in _controllers(directory, "cgroup.controllers"):
        raise CgroupError(
            f"BARO_SANDBOX_CGROUP: {directory} has no memory controller; enable it in its "
            "parent's cgroup.subtree_control"
        )
    if not _writable(directory, "cgroup.subtree_control"):
        raise CgroupError(f"BARO_SANDBOX_CGROUP: {directory} is not writable by the runner")
    try:
        _enable(directory)
    except OSError as exc:
        hint = (
            ": it holds processes; run the runner in a leaf cgroup of its own, not in it"
            if exc.errno == errno.EBUSY
            else ""
        )
        raise CgroupError(
            f"BARO_SANDBOX_CGROUP: cannot enable controllers in {directory}{hint}"
        ) from exc
    return CgroupParent(2, directory, directory)


_resolved: dict[CgroupChoice, tuple[CgroupParent | None, str]] = {}


def resolve(choice: CgroupChoice) -> tuple[CgroupParent | None, str]:
    """The mechanism for this process, proven by a probe; (None, why) when there is none.

    An explicit path that does not work raises CgroupError: the operator asked for it. The
    answer is kept for the life of the process (auto may have moved it into a leaf).
    """
    if choice not in _resolved:
        _resolved[choice] = _resolve(choice)
    return _resolved[choice]


def _resolve(choice: CgroupChoice) -> tuple[CgroupParent | None, str]:
    if choice == "none":
        return None, "BARO_SANDBOX_CGROUP=none"
    if isinstance(choice, Path):
        parent = _explicit(choice)
        try:
            _probe(parent)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CgroupError(
                f"BARO_SANDBOX_CGROUP: a process cannot be started in a child of {choice} "
                f"({exc}); the runner needs write access to cgroup.procs of the common "
                "ancestor of its own cgroup and that directory"
            ) from exc
        return parent, ""
    try:
        auto, why = _auto()
    except OSError as exc:
        return None, f"cannot inspect cgroups: {exc}"
    if auto is None:
        return None, why
    try:
        _probe(auto)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{auto.describe()} does not work: {exc}"
    return auto, ""


@dataclass
class CommandCgroup:
    """The cgroup(s) of one command."""

    parent: CgroupParent
    memory: Path
    pids: Path | None

    @classmethod
    def create(cls, parent: CgroupParent, *, memory_bytes: int, processes: int) -> CommandCgroup:
        name = COMMAND_PREFIX + secrets.token_hex(6)
        memory = parent.memory / name
        memory.mkdir()
        group = cls(parent, memory, None)
        try:
            if parent.version == 2:
                _write(memory / "memory.max", str(memory_bytes))
                for name_, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if (memory / name_).exists():
                        _write(memory / name_, value)
                if (memory / "pids.max").exists():
                    _write(memory / "pids.max", str(processes + EXTRA_PIDS))
            else:
                _write(memory / "memory.limit_in_bytes", str(memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
                if parent.pids is not None:
                    group.pids = parent.pids / name
                    group.pids.mkdir()
                    _write(group.pids / "pids.max", str(processes + EXTRA_PIDS))
        except BaseException:
            group.remove()
            raise
        return group

    @property
    def procs_files(self) -> tuple[str, ...]:
        dirs = (
            [self.memory]
            if self.pids is None or self.pids == self.memory
            else [
                self.memory,
                self.pids,
            ]
        )
        return tuple(str(d / "cgroup.procs") for d in dirs)

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the memory cap so far."""
        name = "memory.events" if self.parent.version == 2 else "memory.oom_control"
        try:
            text = (self.memory / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill(self) -> None:
        """v2: kill every process in it. v1 has no such file: the PID namespace is killed."""
        if self.parent.version == 2:
            with contextlib.suppress(OSError):
                _write(self.memory / "cgroup.kill", "1")

    def populated(self) -> bool:
        try:
            if self.parent.version == 2:
                return "populated 1" in (self.memory / "cgroup.events").read_text()
            return bool((self.memory / "cgroup.procs").read_text().strip())
        except OSError:
            return False

    def remove(self) -> None:
        """Remove the (empty) cgroups; a failure leaves an empty directory behind, logged."""
        for directory in {self.memory, self.pids} - {None}:
            assert directory is not None
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the command cgroup %s: %s", directory, exc)

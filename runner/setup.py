"""`setup:` once per run, its result given to every story's worktree by hard links.

The setup commands run in the run's environment, with the network and the repository's
package caches, in a worktree at the run's base commit. What they leave that is not in the
commit's tree (`node_modules`, `.venv`, build caches) is moved into

    <data_dir>/setups/<key>/tree/...     the result, files made read-only
    <data_dir>/setups/<key>/result.json  its top-level paths and the lock files it was made from
    <data_dir>/setups/<key>.lock         held exclusively while one process makes it

keyed by repository, base commit, commands and image digest, so each runner machine makes
it at most once per run (the first `prepare_run` on one machine; a story on another makes it
there). A story's worktree gets it with `cp -al`: hard links, no file data copied, measured
at a small fraction of a copy (bench/environments.py). Files are read-only, so a tool that
writes into one in place fails instead of changing the other stories' copy; replacing or
deleting one (what package managers do) touches only the story's own link.

A worktree whose lock files differ from the ones the result was made from (a story that
adds a dependency, or one that starts after such a story landed) runs `setup:` again in
place before its checks, so the tests see the dependencies the lock file names.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.checkout import remove_at
from runner.environment import ViewSandbox
from runner.scan import read_beneath

log = logging.getLogger(__name__)

SETUP_TIMEOUT = 900.0
TAIL_CHARS = 3_000
LOCK_FILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "package.json",
        "uv.lock",
        "poetry.lock",
        "Pipfile.lock",
        "pdm.lock",
        "requirements.txt",
        "requirements-dev.txt",
        "pyproject.toml",
        "Cargo.lock",
        "go.sum",
        "go.mod",
        "Gemfile.lock",
        "composer.lock",
    }
)
"""Files whose change means the dependencies may differ (by name, at any depth)."""
_LINK_TIMEOUT = 600.0
_NOT_ENTERED = frozenset({".git", "node_modules", ".venv", "target", "__pycache__"})


class SetupFailed(Exception):
    """A setup command failed; `tail` is the end of its output."""

    def __init__(self, command: str, exit_code: int | None, tail: str, environment: str) -> None:
        how = "timed out" if exit_code is None else f"exited with {exit_code}"
        super().__init__(f'setup command "{command}" {how} in {environment}')
        self.command = command
        self.exit_code = exit_code
        self.tail = tail


@dataclass(frozen=True)
class SetupResult:
    """A made result: where it is, what it holds and which lock files it came from."""

    root: Path
    paths: tuple[str, ...]
    locks: dict[str, str]
    seconds: float

    @property
    def tree(self) -> Path:
        return self.root / "tree"


@dataclass
class Provided:
    """What a worktree holds from setup: the lock files its dependencies match."""

    locks: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    redone: int = 0


def setup_key(repo: str, base_sha: str, commands: Sequence[str], digest: str | None) -> str:
    text = json.dumps([repo.lower(), base_sha, list(commands), digest or "default"])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def lock_ids(worktree: Path, skip: Sequence[str] = ()) -> dict[str, str]:
    """The lock files in a worktree, path → sha256 (dependency directories, `.git` and the
    setup result's own paths are not entered; links are never followed)."""
    found: dict[str, str] = {}
    pruned = {*_NOT_ENTERED, *skip}
    for top, dirs, files in os.walk(worktree, followlinks=False):
        rel = os.path.relpath(top, worktree)
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if d not in _NOT_ENTERED and f"{rel}{d}" not in pruned]
        for name in files:
            if name in LOCK_FILES:
                data = read_beneath(worktree, rel + name)
                if data is not None:
                    found[rel + name] = hashlib.sha256(data).hexdigest()
    return found


class Setups:
    """Setup results under `<data_dir>/setups`; one instance per runner process."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "setups"

    async def ensure(
        self,
        key: str,
        worktree: Path,
        commands: Sequence[str],
        sandbox: ViewSandbox,
        environment: str,
    ) -> SetupResult:
        """The result for `key`, made in `worktree` (holding the base commit, nothing else)
        unless this machine has it already. Raises `SetupFailed`."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        found = self.find(key)
        if found is not None:
            return found
        lock = await _flock(self.root / f"{key}.lock")
        try:
            found = self.find(key)
            if found is not None:
                return found
            return await self._make(key, worktree, commands, sandbox, environment)
        finally:
            os.close(lock)

    def find(self, key: str) -> SetupResult | None:
        root = self.root / key
        try:
            meta = json.loads((root / "result.json").read_text())
        except (OSError, ValueError):
            return None
        os.utime(root / "result.json")  # last use, for the sweep
        return SetupResult(
            root, tuple(meta["paths"]), dict(meta["locks"]), float(meta.get("seconds", 0))
        )

    async def _make(
        self,
        key: str,
        worktree: Path,
        commands: Sequence[str],
        sandbox: ViewSandbox,
        environment: str,
    ) -> SetupResult:
        started = time.monotonic()
        before = await asyncio.to_thread(_top_level, worktree)
        await run_setup(commands, worktree, sandbox, environment)
        after = await asyncio.to_thread(_top_level, worktree)
        made = sorted(after - before)
        locks = await asyncio.to_thread(lock_ids, worktree, made)
        tmp = self.root / f".{key}.tmp-{secrets.token_hex(4)}"
        (tmp / "tree").mkdir(parents=True)
        try:
            for path in made:
                await asyncio.to_thread(os.rename, worktree / path, tmp / "tree" / path)
            await asyncio.to_thread(_read_only, tmp / "tree")
            seconds = round(time.monotonic() - started, 3)
            meta = {"paths": made, "locks": locks, "seconds": seconds, "at": time.time()}
            (tmp / "result.json").write_text(json.dumps(meta))
            os.rename(tmp, self.root / key)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("setup %s made in %.1f s: %s", key, seconds, ", ".join(made) or "nothing")
        return SetupResult(self.root / key, tuple(made), locks, seconds)

    async def link_into(self, result: SetupResult, worktree: Path) -> Provided:
        """Hard-link the result into a freshly reset worktree (paths it has are left)."""
        for path in result.paths:
            target = worktree / path
            if await asyncio.to_thread(os.path.lexists, target):
                continue
            await _run(["cp", "-al", "--", str(result.tree / path), str(target)])
        return Provided(dict(result.locks), result.paths)

    def sweep(self, max_idle_seconds: float, now: float | None = None) -> list[Path]:
        """Results unused for `max_idle_seconds`, and what dead makers left (blocking)."""
        current = time.time() if now is None else now
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for entry in sorted(self.root.iterdir()):
            if entry.suffix == ".lock" or not entry.is_dir() or entry.is_symlink():
                continue
            key = entry.name[1:].split(".tmp-")[0] if entry.name.startswith(".") else entry.name
            with contextlib.suppress(FileNotFoundError):
                used = (entry / "result.json").stat().st_mtime if entry.name == key else 0.0
                if entry.name == key and current - used <= max_idle_seconds:
                    continue
                if not _try_flock(self.root / f"{key}.lock"):
                    continue  # being made (or used to make) right now
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed


async def run_setup(
    commands: Sequence[str], worktree: Path, sandbox: ViewSandbox, environment: str
) -> None:
    """Every setup command in order, with the network; the first failure raises."""
    for command in commands:
        done = await sandbox.run(command, cwd=worktree, timeout=SETUP_TIMEOUT, network=True)
        if not done.ok:
            tail = done.output[-TAIL_CHARS:]
            raise SetupFailed(command, done.exit_code, tail, environment)


async def redo_if_locks_changed(
    provided: Provided, worktree: Path, commands: Sequence[str], sandbox: ViewSandbox, name: str
) -> bool:
    """Run setup again in `worktree` when its lock files are not the ones its dependencies
    were made from; True if it did. Raises `SetupFailed`."""
    if not commands:
        return False
    now = await asyncio.to_thread(lock_ids, worktree, provided.paths)
    if now == provided.locks:
        return False
    changed = sorted(
        p for p in set(now) | set(provided.locks) if now.get(p) != provided.locks.get(p)
    )
    log.info("lock files changed (%s): running setup again in %s", ", ".join(changed), worktree)
    # From a clean slate, as on the base commit: the linked files are read-only, and a
    # setup that writes into what it finds would fail on them.
    await asyncio.to_thread(remove_setup_paths, worktree, provided.paths)
    await run_setup(commands, worktree, sandbox, name)
    provided.locks = now
    provided.redone += 1
    return True


def _top_level(worktree: Path) -> set[str]:
    """The worktree's top-level names (setup results are whole directories or files)."""
    with os.scandir(worktree) as entries:
        return {entry.name for entry in entries}


def _read_only(root: Path) -> None:
    """Regular files lose their write bits (directories keep theirs: `cp -al` makes new
    ones per worktree anyway); links are never followed."""
    for top, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o222:
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o222)


async def _run(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(_LINK_TIMEOUT):
            _, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise OSError(f"{argv[0]} failed: {err.decode(errors='replace').strip()[-300:]}")


async def _flock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            await asyncio.sleep(0.1)
        except BaseException:
            os.close(fd)
            raise


def _try_flock(path: Path) -> bool:
    """True if nobody holds `path` (the lock is dropped again at once)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def remove_setup_paths(worktree: Path, paths: Sequence[str]) -> None:
    """Drop a setup result's paths from a worktree, never following a link."""
    fd = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for path in paths:
            if "/" not in path:
                remove_at(fd, path)
    finally:
        os.close(fd)


__all__ = [
    "LOCK_FILES",
    "Provided",
    "SetupFailed",
    "SetupResult",
    "Setups",
    "lock_ids",
    "redo_if_locks_changed",
    "run_setup",
    "setup_key",
]

"""The start-up proof that the sandbox confines commands on this machine.

A runner that cannot isolate must refuse to start rather than run repository code in the
open, and the operator needs to read what to change, not a bubblewrap error code.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from runner.process import CommandResult

MIN_BWRAP_VERSION = (0, 8)
NONE_HINT = "for trusted local development only, set BARO_SANDBOX=none"

RunInWorktree = Callable[[str, Path], Awaitable[CommandResult]]


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot work on this machine; the message tells the operator what to do."""


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


async def check_bwrap(bwrap: str) -> None:
    """bubblewrap is installed and new enough for the options the sandbox uses."""
    if not _is_executable(bwrap):
        raise SandboxUnavailable(
            f"bubblewrap is not installed (no executable at {bwrap}): "
            f"apt-get install bubblewrap; {NONE_HINT}"
        )
    proc = await asyncio.create_subprocess_exec(
        bwrap,
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={},
    )
    raw, _ = await proc.communicate()
    out = raw.decode(errors="replace")
    match = re.search(r"(\d+)\.(\d+)", out)
    if proc.returncode != 0 or match is None:
        raise SandboxUnavailable(f"{bwrap} --version failed: {out.strip()}; {NONE_HINT}")
    if (int(match.group(1)), int(match.group(2))) < MIN_BWRAP_VERSION:
        raise SandboxUnavailable(
            f"bubblewrap {match.group(0)} is too old: 0.8 or newer is required "
            f"(Debian 12+, Ubuntu 24.04+); {NONE_HINT}"
        )


async def check_confinement(
    run: RunInWorktree, hidden: tuple[Path, ...], scratch_parent: Path | None
) -> None:
    """Run a probe in a scratch worktree next to a decoy secret and judge what it saw."""
    scratch = Path(tempfile.mkdtemp(prefix="baro-sandbox-check-", dir=scratch_parent))
    try:
        worktree, decoy = _scratch_worktree(scratch)
        try:
            result = await run(_probe_script((decoy, *hidden)), worktree)
        except OSError as exc:
            raise SandboxUnavailable(
                f"bubblewrap could not be started: {exc}; {NONE_HINT}"
            ) from exc
        _judge(result, worktree)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _scratch_worktree(scratch: Path) -> tuple[Path, Path]:
    """A worktree and, beside it, a decoy secret that must stay out of sight."""
    scratch.chmod(0o711)  # searchable, not listable, by the sandbox uid
    worktree = scratch / "worktree"
    worktree.mkdir()
    decoy = scratch / "other-repo-key.pem"
    decoy.write_text("decoy\n")
    return worktree, decoy


def _probe_script(probes: tuple[Path, ...]) -> str:
    paths = " ".join(shlex.quote(str(p)) for p in probes)
    return (
        'printf "net=%s\\n" "$(readlink /proc/self/ns/net)"\n'
        'printf "pid=%s\\n" "$(readlink /proc/self/ns/pid)"\n'
        "echo ok > .baro-check && echo write=ok\n"
        "(echo x > /usr/.baro-check) 2>/dev/null && echo usr=writable\n"
        "(echo x > /dev/.baro-check) 2>/dev/null && echo dev=writable\n"
        f'for p in {paths}; do [ -e "$p" ] && echo "visible=$p"; done\n'
        "exit 0\n"
    )


def _judge(result: CommandResult, worktree: Path) -> None:
    lines = result.output.splitlines()
    values = dict(line.split("=", 1) for line in lines if "=" in line)
    if result.exit_code != 0 or values.get("write") != "ok":
        raise SandboxUnavailable(diagnose(result.output))
    problems = []
    if values.get("net") == os.readlink("/proc/self/ns/net"):
        problems.append("the network namespace is the host's")
    if values.get("pid") == os.readlink("/proc/self/ns/pid"):
        problems.append("the pid namespace is the host's")
    if "usr" in values:
        problems.append("/usr is writable")
    if "dev" in values:
        problems.append("/dev is writable")
    problems += [
        f"{line[len('visible=') :]} is visible" for line in lines if line.startswith("visible=")
    ]
    marker = worktree / ".baro-check"
    if not marker.is_file():
        problems.append("a file written in /workspace did not reach the worktree")
    elif marker.stat().st_uid != os.geteuid():
        problems.append("the worktree was not handed back to the runner's user")
    if problems:
        raise SandboxUnavailable("the sandbox is not confining commands: " + "; ".join(problems))


def diagnose(output: str) -> str:
    """An operator message for a sandbox that fails to start, with the likely fix."""
    detail = " ".join(output.split())[:500] or "no output"
    if "Can't find source path" in output:
        hint = (
            "the unprivileged sandbox user cannot reach a bound path: every parent directory "
            "of the worktrees and of extra read-only binds must be searchable by others "
            "(chmod o+x)"
        )
    else:
        hint = (
            "bubblewrap cannot create namespaces here; under Docker run the container with "
            "--security-opt seccomp=unconfined --security-opt apparmor=unconfined (or "
            "--privileged), on Ubuntu 23.10+ allow unprivileged user namespaces "
            "(sysctl kernel.apparmor_restrict_unprivileged_userns=0)"
        )
    return f"sandbox self-check failed: {detail}; {hint}; {NONE_HINT}"

"""Running git with an installation token that never touches disk or a command line.

The token travels as an `http.extraHeader` through git's `GIT_CONFIG_*` environment
variables: it is not written to `.git/config`, and unlike `-c` it does not show up in
`/proc/<pid>/cmdline`. Anything git prints is redacted before it is raised or logged.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GIT_TIMEOUT = 300.0
SHA_PATTERN = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
"""A full commit id (SHA-1 or SHA-256): what a sha read back from Redis must be before it
is passed to git, where anything else could be taken for an option or a revision range."""


class GitError(RuntimeError):
    """A git command failed; the message holds the (redacted) command and its output."""


@dataclass(frozen=True)
class GitAuth:
    token: str = field(repr=False)  # a repr lands in tracebacks and error messages

    def header(self) -> str:
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        return f"Authorization: Basic {basic}"

    def redact(self, text: str) -> str:
        basic = self.header().removeprefix("Authorization: Basic ")
        return text.replace(self.token, "***").replace(basic, "***")


def git_env(auth: GitAuth | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for git: no prompts, no user config, optional auth header."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/nonexistent"),
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "baro-bot",
        "GIT_AUTHOR_EMAIL": "baro-bot@users.noreply.github.com",
        "GIT_COMMITTER_NAME": "baro-bot",
        "GIT_COMMITTER_EMAIL": "baro-bot@users.noreply.github.com",
    }
    if auth is not None:
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": auth.header(),
            }
        )
    if extra:
        env.update(extra)
    return env


async def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    auth: GitAuth | None = None,
    timeout: float = GIT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run `git args…`; return stdout, or raise GitError with redacted output."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=git_env(auth, env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        if auth is not None:
            text = auth.redact(text)
        raise GitError(f"git {args[0]} failed (exit {proc.returncode}): {text[-2000:]}")
    return out.decode(errors="replace")


async def shallow_clone(
    url: str, dest: Path, auth: GitAuth, branch: str | None = None, depth: int = 1
) -> None:
    """A shallow clone of one branch; the remote URL holds no credentials."""
    args = ["clone", "--depth", str(max(1, depth)), "--single-branch", "--no-tags"]
    if branch:
        args += ["--branch", branch]
    await run_git([*args, url, str(dest)], auth=auth)


async def diff_since(checkout: Path, auth: GitAuth, base: str, limit: int) -> str:
    """The diff from `base` to the checkout's HEAD (deepening a shallow clone until `base` is
    in it); never runs drivers or text conversion the tree's attributes might name."""
    for _ in range(8):
        try:
            await run_git(["cat-file", "-e", f"{base}^{{commit}}"], cwd=checkout)
            break
        except GitError:
            await run_git(["fetch", "--quiet", "--deepen=50", "origin"], cwd=checkout, auth=auth)
    text = await run_git(
        ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", base, "HEAD"],
        cwd=checkout,
    )
    return text[:limit]


async def read_remote_file(
    checkout: Path, auth: GitAuth, branch: str, path: str, limit: int
) -> str | None:
    """`path` as it is on the remote's `branch` (fetched at depth 1 into a private ref), or
    None when it is absent. For settings that must come from a branch other than the one
    checked out: a follow-up run reads its repository's config from the default branch."""
    ref = "refs/baro/config-source"
    await run_git(
        ["fetch", "--quiet", "--depth", "1", "--no-tags", "origin", f"+refs/heads/{branch}:{ref}"],
        cwd=checkout,
        auth=auth,
    )
    try:
        await run_git(["cat-file", "-e", f"{ref}:{path}"], cwd=checkout)
    except GitError:
        return None
    text = await run_git(["cat-file", "blob", f"{ref}:{path}"], cwd=checkout)
    return text[:limit]

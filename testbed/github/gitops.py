"""Thin wrappers over the `git` CLI for the bare repositories the testbed hosts.

Refs live in real git so that pushes over smart HTTP and the refs API see the same truth.
All functions are synchronous; async callers run them in a worker thread.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ZERO_SHA = "0" * 40

PRE_RECEIVE_HOOK = r"""#!/bin/sh
# Testbed stand-in for GitHub's rule: an App without the `workflows` permission may not
# create or update files under .github/workflows/.
[ "$TESTBED_WORKFLOWS" = "write" ] && exit 0
zero=0000000000000000000000000000000000000000
while read -r old new ref; do
  [ "$new" = "$zero" ] && continue
  for c in $(git rev-list "$new" --not --all); do
    f=$(git diff-tree --no-commit-id --name-only -r --root "$c" \
        | grep '^\.github/workflows/' | head -n 1)
    if [ -n "$f" ]; then
      msg="refusing to allow a GitHub App to create or update workflow"
      echo "$msg \`$f\` without \`workflows\` permission" >&2
      exit 1
    fi
  done
done
exit 0
"""


class GitError(RuntimeError):
    """A git command failed; carries its stderr."""


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment isolated from the user's git config (signing, hooks paths, ...)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", tempfile.gettempdir()),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LANG": "C",
    }
    if extra:
        env.update(extra)
    return env


def run_git(
    git_dir: Path, *args: str, input_bytes: bytes | None = None, env: dict[str, str] | None = None
) -> str:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=input_bytes,
        capture_output=True,
        env=git_env(env),
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()


def init_bare(
    git_dir: Path,
    *,
    default_branch: str,
    files: dict[str, str | bytes] | None,
    author: str,
    email: str,
) -> str:
    """Create a bare repo whose `default_branch` holds one commit with `files`; return its sha."""
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "-b", default_branch, str(git_dir)],
        check=True,
        env=git_env(),
        capture_output=True,
    )
    run_git(git_dir, "config", "http.receivepack", "true")
    hook = git_dir / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE_HOOK)
    hook.chmod(0o755)
    (git_dir / "git-daemon-export-ok").touch()
    work = Path(tempfile.mkdtemp(prefix="baro-testbed-wt-"))
    try:
        for rel, content in (files or {"README.md": f"# {git_dir.stem}\n"}).items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        env = {
            "GIT_INDEX_FILE": str(work.parent / f"{work.name}.index"),
            "GIT_AUTHOR_NAME": author,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": author,
            "GIT_COMMITTER_EMAIL": email,
        }
        run_git(git_dir, f"--work-tree={work}", "add", "-A", env=env)
        run_git(git_dir, f"--work-tree={work}", "commit", "-q", "-m", "Initial commit", env=env)
        Path(env["GIT_INDEX_FILE"]).unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return resolve(git_dir, f"refs/heads/{default_branch}") or ""


@dataclass(frozen=True)
class RefInfo:
    ref: str
    sha: str
    type: str


def list_refs(git_dir: Path, prefix: str = "refs/") -> list[RefInfo]:
    """Refs whose full name starts with `prefix` (a plain string prefix, like GitHub)."""
    out = run_git(
        git_dir, "for-each-ref", "--format=%(refname) %(objectname) %(objecttype)", "refs/"
    )
    refs = []
    for line in out.splitlines():
        name, sha, kind = line.split(" ")
        if name.startswith(prefix):
            refs.append(RefInfo(name, sha, kind))
    return refs


def resolve(git_dir: Path, ref: str) -> str | None:
    """The sha a full ref (`refs/heads/x`) points at, or None."""
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-parse", "--verify", "--quiet", f"{ref}^{{}}"],
        capture_output=True,
        env=git_env(),
        check=False,
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip()


def ref_exists(git_dir: Path, ref: str) -> bool:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show-ref", "--verify", "--quiet", ref],
        env=git_env(),
        check=False,
    )
    return proc.returncode == 0


def object_type(git_dir: Path, sha: str) -> str | None:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "-t", sha],
        capture_output=True,
        env=git_env(),
        check=False,
    )
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def is_ancestor(git_dir: Path, ancestor: str, descendant: str) -> bool:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "merge-base", "--is-ancestor", ancestor, descendant],
        env=git_env(),
        check=False,
    )
    return proc.returncode == 0


def update_ref(git_dir: Path, ref: str, sha: str, old: str | None = None) -> None:
    args = ["update-ref", ref, sha] + ([old] if old is not None else [])
    run_git(git_dir, *args)


def delete_ref(git_dir: Path, ref: str) -> None:
    run_git(git_dir, "update-ref", "-d", ref)


@dataclass(frozen=True)
class DiffStats:
    commits: int
    additions: int
    deletions: int
    changed_files: int


def diff_stats(git_dir: Path, base: str, head: str) -> DiffStats:
    """What a PR from `head` into `base` contains, as GitHub counts it (three-dot diff)."""
    commits = int(run_git(git_dir, "rev-list", "--count", f"{base}..{head}").strip() or 0)
    additions = deletions = files = 0
    for line in run_git(git_dir, "diff", "--numstat", f"{base}...{head}").splitlines():
        added, deleted, _path = line.split("\t", 2)
        files += 1
        additions += int(added) if added.isdigit() else 0
        deletions += int(deleted) if deleted.isdigit() else 0
    return DiffStats(commits, additions, deletions, files)


def read_file(git_dir: Path, ref: str, path: str) -> bytes | None:
    """A file's content at `ref`, or None (handy for tests asserting what was pushed)."""
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{ref}:{path}"],
        capture_output=True,
        env=git_env(),
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else None


def branch_ahead(git_dir: Path, branch: str, base: str = "main") -> str:
    """Create `branch` one empty commit ahead of `base` (a PR needs commits between them)."""
    author = {
        "GIT_AUTHOR_NAME": "testbed",
        "GIT_AUTHOR_EMAIL": "testbed@example.invalid",
        "GIT_COMMITTER_NAME": "testbed",
        "GIT_COMMITTER_EMAIL": "testbed@example.invalid",
    }
    sha = run_git(
        git_dir, "commit-tree", f"{base}^{{tree}}", "-p", base, "-m", "work", env=author
    ).strip()
    update_ref(git_dir, f"refs/heads/{branch}", sha)
    return sha


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


def diff_hunks(git_dir: Path, base: str, head: str, path: str) -> list[tuple[set[int], str]]:
    """Per hunk of `path`'s diff (merge base → head): its new-side lines and its text, which
    is what GitHub accepts review comments on and shows as a comment's `diff_hunk`."""
    out = run_git(git_dir, "diff", "--no-color", "--no-ext-diff", f"{base}...{head}", "--", path)
    hunks: list[tuple[set[int], str]] = []
    lines: set[int] = set()
    text: list[str] = []
    number = 0
    for line in out.splitlines():
        match = _HUNK.match(line)
        if match:
            if text:
                hunks.append((lines, "\n".join(text)))
            lines, text, number = set(), [line], int(match.group(1))
            continue
        if not text:
            continue
        text.append(line)
        if line.startswith(("+", " ")):
            lines.add(number)
            number += 1
    if text:
        hunks.append((lines, "\n".join(text)))
    return hunks

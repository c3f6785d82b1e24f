"""git over the testbed's real smart HTTP: shallow clones and reading another branch's file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from app.gitcmd import GitAuth, read_remote_file, shallow_clone
from tests.runner.test_workspace import Hub, hub

__all__ = ["hub"]


async def test_a_file_is_read_from_another_branch_than_the_checkout(
    hub: Hub, tmp_path: Path
) -> None:
    repo = hub.state.create_repo(
        "octo", "config-source", {".github/baro.yml": "max_parallel: 2\n"}, installation=hub.inst
    )

    def git(*args: str, stdin: str | None = None) -> str:
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
        env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
        return subprocess.run(
            ["git", f"--git-dir={repo.git_dir}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()

    # A run branch whose own .github/baro.yml differs from the default branch's.
    blob = git("hash-object", "-w", "--stdin", stdin="max_parallel: 99\n")
    tree = git("mktree", stdin=f"100644 blob {blob}\tbaro.yml\n")
    root = git("mktree", stdin=f"040000 tree {tree}\t.github\n")
    commit = git("commit-tree", root, "-p", "main", "-m", "branch config")
    git("update-ref", "refs/heads/baro/issue-1-x", commit)

    token = hub.state.create_token(hub.inst).token
    auth = GitAuth(token)
    checkout = tmp_path / "repo"
    await shallow_clone(hub.tb.clone_url(repo), checkout, auth, "baro/issue-1-x")
    assert (checkout / ".github" / "baro.yml").read_text() == "max_parallel: 99\n"

    text = await read_remote_file(checkout, auth, "main", ".github/baro.yml", 100)
    assert text == "max_parallel: 2\n"
    assert await read_remote_file(checkout, auth, "main", ".github/missing.yml", 100) is None
    assert await read_remote_file(checkout, auth, "main", ".github/baro.yml", 4) == "max_"
    # The checkout is untouched, and no credential was written anywhere in it.
    assert (checkout / ".github" / "baro.yml").read_text() == "max_parallel: 99\n"
    leaked = [p for p in checkout.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaked == []

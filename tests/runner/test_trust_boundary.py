"""Attacks a story agent can mount from its worktree on the runner's host, each planted
through the agent's own tools (bash in the real sandbox, the editor) on a real worktree,
then landed and reused by the runner. Each test asserts that nothing happened outside:
a marker file outside the worktree never appears and a host file's bytes do not change.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.gitcmd import GitAuth
from runner.landing import LandError, land
from runner.limits import Limits, MiB
from runner.mirror import RepoRef
from runner.sandbox import Sandbox, SandboxPolicy
from runner.tools import StoryTools
from runner.workspace import CommitMessage, Workspaces, Worktree, inspect
from tests.runner.conftest import BWRAP
from tests.runner.test_workspace import BRANCH, RUN, Hub, hub

__all__ = ["hub"]


@dataclass
class Host:
    """The runner's side: things no story may create or change."""

    root: Path
    marker: Path
    victim: Path
    victim_bytes: bytes

    def untouched(self) -> bool:
        return not self.marker.exists() and self.victim.read_bytes() == self.victim_bytes


@dataclass
class World:
    hub: Hub
    ref: RepoRef
    auth: GitAuth
    ws: Workspaces
    sandbox: Sandbox
    host: Host
    repo_git_dir: Path

    def head(self) -> str | None:
        return self.hub.state.branch_sha(self.hub.state.get_repo(self.ref.full_name), BRANCH)

    async def prepare(self, story: str) -> Worktree:
        return await self.ws.prepare(
            self.ref, BRANCH, self.auth, run_id=RUN, story_id=story, attempt=1
        )

    def tools(self, wt: Worktree) -> StoryTools:
        return StoryTools(wt.path, self.sandbox)

    async def bash(self, wt: Worktree, command: str) -> str:
        outcome = await self.tools(wt).call("bash", {"command": command})
        assert not outcome.is_error, outcome.content
        return outcome.content

    def pushed_paths(self) -> list[str]:
        out = subprocess.run(
            ["git", f"--git-dir={self.repo_git_dir}", "ls-tree", "-r", "--name-only", BRANCH],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()


@pytest.fixture
def host() -> Iterator[Host]:
    # Searchable by the sandbox uid (a real data directory is), unlike pytest's tmp_path.
    root = Path(tempfile.mkdtemp(prefix="baro-trust-"))
    root.chmod(0o711)
    victim = root / "host-file.txt"
    victim.write_bytes(b"the runner's own file\n")
    yield Host(root, root / f"pwned-{secrets.token_hex(4)}", victim, victim.read_bytes())
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def world(hub: Hub, host: Host) -> AsyncIterator[World]:
    if not Path(BWRAP).exists():
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap")
    files: dict[str, str | bytes] = {"README.md": "# demo\n", "a.py": "x = 1\n"}
    repo = hub.state.create_repo(
        "octo", f"trust{secrets.token_hex(3)}", files, installation=hub.inst
    )
    subprocess.run(
        ["git", f"--git-dir={repo.git_dir}", "update-ref", f"refs/heads/{BRANCH}", "main"],
        check=True,
    )
    token = hub.state.create_token(hub.inst)
    data_dir = host.root / "data"
    policy = SandboxPolicy(
        limits=Limits(memory_bytes=1024 * MiB, processes=64, file_size_bytes=64 * MiB),
        hidden_paths=(data_dir / "mirrors", host.victim),
        bwrap_path=BWRAP,
    )
    yield World(
        hub,
        RepoRef(repo.full_name, hub.tb.clone_url(repo)),
        GitAuth(token.token),
        Workspaces(data_dir),
        Sandbox(policy),
        host,
        repo.git_dir,
    )


def message(story: str) -> CommitMessage:
    return CommitMessage(RUN, story, "A story", "Did it.", ("octo", 7))


async def refused_then_reused(world: World, wt: Worktree, *paths: str) -> LandError:
    """Landing refuses the change and pushes nothing; the next story reuses the checkout."""
    start = world.head()
    with pytest.raises(LandError) as caught:
        await land(wt, message(wt.story_id), world.auth)
    assert caught.value.kind in ("refused", "workflow"), caught.value
    for path in paths:
        assert path in caught.value.files, (path, caught.value.files)
    assert world.head() == start  # nothing pushed
    await world.ws.cleanup(wt)  # kept for reuse
    again = await world.prepare(wt.story_id + "-next")
    assert again.path == wt.path  # the very checkout the agent left behind
    assert (await inspect(again)).empty  # reset to the branch head, nothing left over
    assert not any(p.name.casefold() == ".git" for p in again.path.rglob("*"))
    await world.ws.cleanup(again)
    return caught.value


def planted_config(marker: Path) -> str:
    """Every config key that makes git run a command, each set to create `marker`."""
    run = f"touch {marker}"
    return (
        "[core]\n"
        f'\tfsmonitor = "{run}"\n'
        "\thooksPath = hooks\n"
        f'\tsshCommand = "{run}; ssh"\n'
        f'\tpager = "{run}"\n'
        f'\teditor = "{run}"\n'
        "[include]\n"
        "\tpath = extra.config\n"
        '[filter "evil"]\n'
        f'\tclean = "{run}"\n'
        f'\tsmudge = "{run}"\n'
        '[diff "evil"]\n'
        f'\ttextconv = "{run}"\n'
        f'\tcommand = "{run}"\n'
        '[merge "evil"]\n'
        f'\tdriver = "{run}"\n'
    )


def plant_repo_script(directory: str, marker: Path) -> str:
    """Shell that makes `directory` a git repository whose config, hooks and attributes all
    try to run `touch marker` (git itself is on the sandbox's read-only /usr)."""
    config = planted_config(marker).replace("'", "'\\''")
    hook = f"#!/bin/sh\ntouch {marker}\n"
    return (
        f"mkdir -p {directory} && cd {directory} && git init -q . && "
        "git -c user.name=a -c user.email=a@b commit -q --allow-empty -m x && "
        f"printf '%s' '{config}' > .git/config && "
        f"printf '[core]\\n\\tfsmonitor = \"touch {marker}\"\\n' > .git/extra.config && "
        "mkdir -p .git/hooks hooks && "
        "for h in pre-commit post-checkout post-merge pre-push reference-transaction "
        "post-index-change fsmonitor-watchman; do "
        f"printf '{hook}' > .git/hooks/$h; cp .git/hooks/$h hooks/$h; "
        "chmod +x .git/hooks/$h hooks/$h; done && "
        "printf '* filter=evil diff=evil merge=evil\\n' > .gitattributes && "
        "echo data > file.txt"
    )


async def test_a_nested_repository_never_runs_on_the_host(world: World) -> None:
    """The hole that was: core.fsmonitor in a nested repository ran on the host at landing."""
    wt = await world.prepare("S1")
    await world.bash(wt, plant_repo_script("sub", world.host.marker))
    await world.bash(wt, "echo ok > b.py")
    assert (wt.path / "sub" / ".git" / "config").is_file()

    refused = await refused_then_reused(world, wt, "sub/.git")
    assert "nested git repository" in refused.message
    assert "rm -rf 'sub/.git'" in refused.message
    assert world.host.untouched()
    assert not any(p.startswith("sub") for p in world.pushed_paths())


async def test_a_planted_top_level_repository_is_data(world: World) -> None:
    """A `.git` directory at the top with hooks, fsmonitor, include.path, filters and
    attributes: nothing of it runs, and it is refused rather than pushed."""
    wt = await world.prepare("S1")
    await world.bash(wt, plant_repo_script(".", world.host.marker))
    refused = await refused_then_reused(world, wt, ".git")
    assert "nested git repository" in refused.message
    assert world.host.untouched()


async def test_attributes_and_filters_in_the_tree_do_nothing(world: World) -> None:
    """A `.gitattributes` naming filters and drivers (configured nowhere the runner reads)
    lands as a plain file; landing and a merge with a sibling run none of them."""
    first, second = await world.prepare("S1"), await world.prepare("S2")
    for wt, text in ((first, "x = 10\n"), (second, "x = 20\n")):
        await world.bash(wt, "printf '* filter=evil diff=evil merge=evil\\n' > .gitattributes")
        await world.bash(wt, f"printf '{text}' > a.py")
    await land(first, message("S1"), world.auth)

    async def give_up(conflict: object) -> bool:
        return False

    with pytest.raises(LandError) as caught:
        await land(second, message("S2"), world.auth, on_conflict=give_up)
    assert caught.value.kind == "conflict"
    assert ".gitattributes" in world.pushed_paths()
    assert world.host.untouched()


async def test_a_dot_git_file_pointing_elsewhere_is_refused(world: World) -> None:
    elsewhere = world.host.root / "elsewhere.git"
    subprocess.run(["git", "init", "-q", "--bare", str(elsewhere)], check=True)
    (elsewhere / "config").write_text(planted_config(world.host.marker))
    wt = await world.prepare("S1")
    await world.bash(wt, f"printf 'gitdir: {elsewhere}\\n' > .git && echo b > b.py")
    await refused_then_reused(world, wt, ".git")
    assert world.host.untouched()


async def test_a_dot_git_symlink_to_a_host_file_is_never_written(world: World) -> None:
    """The hole that was: reusing a checkout wrote `.git` through the agent's symlink."""
    wt = await world.prepare("S1")
    await world.bash(wt, f"ln -s {world.host.victim} .git && echo b > b.py")
    assert (wt.path / ".git").is_symlink()
    await refused_then_reused(world, wt, ".git")
    assert world.host.untouched()


async def test_symlinks_out_of_the_worktree_are_refused_and_never_followed(
    world: World,
) -> None:
    wt = await world.prepare("S1")
    victim = world.host.victim
    await world.bash(
        wt,
        f"ln -s {victim} absolute && ln -s ../../../../../../../../{victim} relative && "
        "mkdir d && ln -s . d/self && ln -s d/self/self/../../.. loop_escape && "
        "ln -s a.py inside_ok && mkdir -p .github && ln -s ../ci .github/workflows && "
        f"ln -s {world.host.root} dirlink && echo b > b.py",
    )
    refused = await refused_then_reused(
        world, wt, "absolute", "relative", "loop_escape", ".github/workflows", "dirlink"
    )
    assert "inside_ok" not in refused.files
    assert world.host.untouched()
    assert sorted(os.listdir(world.host.root)) == ["data", "host-file.txt"]


async def test_an_in_repository_symlink_lands(world: World) -> None:
    wt = await world.prepare("S1")
    await world.bash(wt, "mkdir -p docs && ln -s ../a.py docs/a.py")
    landed = await land(wt, message("S1"), world.auth)
    assert world.head() == landed.sha and "docs/a.py" in world.pushed_paths()


async def test_hard_links_and_special_files_are_refused(world: World) -> None:
    wt = await world.prepare("S1")
    # Inside the sandbox a hard link to anything outside the worktree's mount fails...
    out = await world.bash(wt, "ln /etc/os-release x 2>&1; echo rc=$?")
    assert "rc=1" in out and not (wt.path / "x").exists()
    # ...so plant one from the host side, as a runner bug or another process might.
    os.link(world.host.victim, wt.path / "hardlink.txt")
    await world.bash(
        wt,
        "mkfifo pipe && python3 -c "
        "\"import socket; s = socket.socket(socket.AF_UNIX); s.bind('sock')\"",
    )
    refused = await refused_then_reused(world, wt, "hardlink.txt", "pipe", "sock")
    assert "hard link" in refused.message and "FIFO" in refused.message
    assert world.host.untouched()


async def test_names_git_refuses_are_refused(world: World) -> None:
    wt = await world.prepare("S1")
    await world.bash(
        wt,
        "mkdir -p '.GIT ' 'git~1' && echo x > '.GIT /config' && echo x > 'git~1/x' && "
        "echo x > \"$(printf 'new\\nline')\" && echo x > 'back\\slash' && echo b > b.py",
    )
    refused = await refused_then_reused(
        world, wt, ".GIT /config", "git~1/x", "new\nline", "back\\slash"
    )
    assert "rename it" in refused.message
    assert world.host.untouched()


async def test_a_gitmodules_with_a_command_is_refused(world: World) -> None:
    wt = await world.prepare("S1")
    await world.bash(
        wt,
        'printf \'[submodule "x"]\\n\\tpath = x\\n\\turl = ./x\\n'
        f"\\tupdate = !touch {world.host.marker}\\n' > .gitmodules && mkdir x && echo b > b.py",
    )
    refused = await refused_then_reused(world, wt, ".gitmodules")
    assert "submodule" in refused.message
    assert world.host.untouched()


async def test_a_file_over_the_size_cap_is_refused(world: World) -> None:
    wt = await world.prepare("S1")
    wt.caps = type(wt.caps)(max_file_bytes=1024)
    await world.bash(wt, "head -c 4096 /dev/zero > big.bin && echo b > b.py")
    refused = await refused_then_reused(world, wt, "big.bin")
    assert "over the 0.0 MiB cap" in refused.message or "cap for one file" in refused.message


async def test_workflow_changes_are_refused_and_ignored_files_never_committed(
    world: World,
) -> None:
    wt = await world.prepare("S1")
    await world.bash(
        wt,
        "mkdir -p .github/workflows node_modules/pkg/.git && "
        "echo on: push > .github/workflows/ci.yml && echo node_modules/ > .gitignore && "
        "echo x > node_modules/pkg/index.js && echo b > b.py",
    )
    refused = await refused_then_reused(world, wt, ".github/workflows/ci.yml")
    assert refused.kind == "workflow"
    assert "node_modules/pkg/.git" not in refused.files  # ignored: never listed


@pytest.mark.parametrize("command", ["view", "create", "str_replace", "insert"])
@pytest.mark.parametrize(
    "path",
    [
        "../../host-file.txt",
        "dirlink/host-file.txt",
        "filelink",
        "/workspace/../../host-file.txt",
        "HOST",
        ".git/config",
        "sub/.GIT/config",
        "a.py\x00../../x",
    ],
)
async def test_editor_paths_cannot_leave_the_worktree(
    world: World, command: str, path: str
) -> None:
    wt = await world.prepare("S1")
    await world.bash(wt, f"ln -s {world.host.root} dirlink && ln -s {world.host.victim} filelink")
    target = path.replace("HOST", str(world.host.victim))
    arguments: dict[str, object] = {"command": command, "path": target}
    arguments.update(
        {
            "create": {"file_text": "owned\n"},
            "str_replace": {"old_str": "the runner", "new_str": "owned"},
            "insert": {"insert_line": 0, "insert_text": "owned\n"},
            "view": {},
        }[command]
    )
    outcome = await world.tools(wt).call("editor", arguments)
    assert outcome.is_error, outcome.content
    assert "runner's own file" not in outcome.content  # nothing of the host file read
    assert world.host.untouched()
    assert sorted(os.listdir(world.host.root)) == ["data", "host-file.txt"]


async def test_the_planted_repository_is_live_for_a_git_that_walks_it(world: World) -> None:
    """The control for the tests above: the planted config does run a command as soon as
    host git looks at the nested repository, which is what the runner must never do."""
    wt = await world.prepare("S1")
    await world.bash(wt, plant_repo_script("sub", world.host.marker))
    subprocess.run(["git", "-C", str(wt.path / "sub"), "status"], capture_output=True, check=False)
    assert world.host.marker.exists()
    world.host.marker.unlink()

"""Mirrors, worktrees and landing against the testbed's real git smart HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app import keys
from app.gitcmd import GitAuth, GitError
from app.landing_turn import LandingTurn, Waiting
from runner import workspace
from runner.landing import Landed, OnRebased, Ready
from runner.objects import numstat
from runner.workspace import (
    CommitMessage,
    Conflict,
    LandError,
    RepoRef,
    Workspaces,
    Worktree,
    changed_files,
    cleanup,
    land,
)
from testbed.github.entities import Installation, Repo
from testbed.github.server import TestbedServer, running_testbed
from testbed.github.state import GitHubState

BRANCH = "baro/issue-1-demo"
RUN = "r1"
_names = itertools.count(1)


@dataclass
class Hub:
    state: GitHubState
    tb: TestbedServer
    inst: Installation


@dataclass
class Env:
    hub: Hub
    repo: Repo
    ref: RepoRef
    auth: GitAuth
    ws: Workspaces
    data_dir: Path

    def git(self, *args: str) -> str:
        """git on the hosted bare repository (the truth on 'GitHub')."""
        return subprocess.run(
            ["git", f"--git-dir={self.repo.git_dir}", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def raw_message(self, sha: str) -> str:
        """The commit message exactly as stored."""
        return self.git("cat-file", "commit", sha).split("\n\n", 1)[1]

    def head(self) -> str | None:
        return self.hub.state.branch_sha(self.repo, BRANCH)

    def read(self, path: str) -> str | None:
        data = self.hub.state.read_file(self.repo, BRANCH, path)
        return None if data is None else data.decode()

    def story_commits(self) -> list[str]:
        """Messages of the commits on the run branch that are not on main."""
        out = self.git("log", "--format=%B%x1e", f"main..refs/heads/{BRANCH}")
        return [m.strip("\n") for m in out.split("\x1e") if m.strip()]

    async def prepare(self, story: str, attempt: int = 1) -> Worktree:
        return await self.ws.prepare(
            self.ref, BRANCH, self.auth, run_id=RUN, story_id=story, attempt=attempt
        )


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with GitHubState() as state, running_testbed(state) as tb:
        app = state.create_app("baro-test")
        inst = state.create_installation(app, "octo")
        yield Hub(state, tb, inst)


@pytest.fixture
def env(hub: Hub, tmp_path: Path) -> Env:
    files: dict[str, str | bytes] = {"README.md": "# demo\n", "a.py": "x = 1\ny = 2\n"}
    repo = hub.state.create_repo("octo", f"demo{next(_names)}", files, installation=hub.inst)
    subprocess.run(
        ["git", f"--git-dir={repo.git_dir}", "update-ref", f"refs/heads/{BRANCH}", "main"],
        check=True,
    )
    token = hub.state.create_token(hub.inst)
    ref = RepoRef(repo.full_name, hub.tb.clone_url(repo))
    data_dir = tmp_path / "data"
    return Env(hub, repo, ref, GitAuth(token.token), Workspaces(data_dir), data_dir)


def message(story: str, title: str = "A story", summary: str = "Did it.") -> CommitMessage:
    return CommitMessage(RUN, story, title, summary, ("octo", 7))


def files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


async def test_prepare_at_run_branch_head_and_cleanup(env: Env) -> None:
    first = await env.prepare("S1")
    (first.path / "b.py").write_text("b = 1\n")
    await land(first, message("S1"), env.auth)
    await cleanup(first)

    wt = await env.prepare("S2")
    assert wt.base == env.head()
    assert (wt.path / "b.py").read_text() == "b = 1\n"  # holds what S1 landed
    assert wt.path.parent == env.ws.worktrees_dir
    assert wt.path.parent.parent == env.data_dir / "worktrees"
    assert wt.path.name.startswith("r1-S2-1-")
    mirror = env.data_dir / "mirrors" / env.repo.full_name.lower()
    assert wt.mirror.path == mirror.with_name(mirror.name + ".git")
    assert not (wt.path / ".git").exists()  # a plain directory: git state stays in the mirror
    await cleanup(wt)
    assert not wt.path.exists()
    assert not (wt.mirror.path / "worktrees").exists()


async def test_a_head_the_mirror_holds_is_prepared_without_a_fetch(env: Env) -> None:
    """The head the run's last landing pushed from this mirror needs no fetch (a fetch
    with these credentials would fail); a head the mirror lacks is fetched."""
    first = await env.prepare("S1")
    (first.path / "b.py").write_text("b = 1\n")
    landed = await land(first, message("S1"), env.auth)
    await cleanup(first)

    offline = GitAuth("not-a-token")
    wt = await env.ws.prepare(
        env.ref, BRANCH, offline, run_id=RUN, story_id="S2", attempt=1, known_head=landed.sha
    )
    assert wt.base == landed.sha == env.head()
    assert (wt.path / "b.py").read_text() == "b = 1\n"
    await cleanup(wt)
    with pytest.raises(GitError):
        await env.ws.prepare(
            env.ref, BRANCH, offline, run_id=RUN, story_id="S3", attempt=1, known_head="f" * 40
        )


async def test_worktree_is_reused_clean_after_an_error(env: Env) -> None:
    kept: list[Path] = []
    original = (await env.prepare("S0")).path  # leaves the pool empty: not cleaned up
    with pytest.raises(RuntimeError):
        async with env.ws.worktree(
            env.ref, BRANCH, env.auth, run_id=RUN, story_id="S1", attempt=2
        ) as wt:
            kept.append(wt.path)
            (wt.path / "stray.txt").write_text("left behind")
            (wt.path / "__pycache__").mkdir()
            (wt.path / "a.py").write_text("broken = True\n")
            raise RuntimeError("story failed")
    again = await env.prepare("S2")
    assert again.path == kept[0] != original
    assert not (again.path / "stray.txt").exists()
    assert not (again.path / "__pycache__").exists()
    assert (again.path / "a.py").read_text() == (original / "a.py").read_text()
    assert again.base == env.head()
    assert await changed_files(again) == []


async def test_idle_worktrees_beyond_the_pool_are_removed(env: Env) -> None:
    from runner.workspace import IDLE_WORKTREES

    trees = [await env.prepare(f"S{i}") for i in range(IDLE_WORKTREES + 1)]
    for wt in trees:
        await env.ws.cleanup(wt)
    assert [wt.path.exists() for wt in trees] == [True] * IDLE_WORKTREES + [False]


async def test_land_one_commit_with_message_and_no_token_on_disk(env: Env) -> None:
    start = env.head()
    wt = await env.prepare("S1")
    (wt.path / "a.py").write_text("x = 10\ny = 2\n")
    (wt.path / "pkg").mkdir()
    (wt.path / "pkg" / "new.py").write_text("n = 1\n")
    assert await changed_files(wt) == ["a.py", "pkg/new.py"]

    msg = message("S1", "Reservation enum", "Adds the enum.")
    landed = await land(wt, msg, env.auth)

    assert landed.attempts == 1 and not landed.rebased
    assert env.head() == landed.sha
    assert env.git("rev-parse", f"{landed.sha}^").strip() == start
    assert env.raw_message(landed.sha) == msg.render()
    assert env.git("log", "-1", "--format=%an <%ae>|%cn", landed.sha).strip() == (
        "baro-bot <baro-bot@users.noreply.github.com>|baro-bot"
    )
    assert env.read("pkg/new.py") == "n = 1\n"
    assert await changed_files(wt) == ["a.py", "pkg/new.py"]
    assert await numstat(wt.mirror, start, landed.sha) == [
        ("1", "1", "a.py"),
        ("1", "0", "pkg/new.py"),
    ]

    token = env.auth.token
    basic = env.auth.header().removeprefix("Authorization: Basic ")
    assert files_holding(env.data_dir, token) == []
    assert files_holding(env.data_dir, basic) == []
    config = (wt.mirror.path / "config").read_text()
    assert env.ref.clone_url in config and "@" not in config
    await cleanup(wt)


async def test_concurrent_stories_both_land(env: Env) -> None:
    start = env.head()
    first, second = await asyncio.gather(env.prepare("S1"), env.prepare("S2"))
    assert first.base == second.base == start
    (first.path / "one.py").write_text("one = 1\n")
    (second.path / "two.py").write_text("two = 2\n")

    results = await asyncio.gather(
        land(first, message("S1", "One"), env.auth), land(second, message("S2", "Two"), env.auth)
    )

    assert sorted(r.rebased for r in results) == [False, True]
    assert max(r.attempts for r in results) >= 2
    commits = env.story_commits()
    assert len(commits) == 2
    assert {c.split("\n")[0] for c in commits} == {"S1: One", "S2: Two"}
    assert env.read("one.py") == "one = 1\n" and env.read("two.py") == "two = 2\n"
    assert env.head() in {r.sha for r in results}
    await asyncio.gather(cleanup(first), cleanup(second))


async def _racing_edits(env: Env) -> tuple[Worktree, str]:
    """S1 lands `x = 10`; S2, prepared from the same head, has `x = 20` on the same line."""
    first, second = await asyncio.gather(env.prepare("S1"), env.prepare("S2"))
    (first.path / "a.py").write_text("x = 10\ny = 2\n")
    (second.path / "a.py").write_text("x = 20\ny = 2\n")
    (second.path / "other.py").write_text("o = 1\n")
    landed = await land(first, message("S1"), env.auth)
    await cleanup(first)
    return second, landed.sha


async def test_conflict_resolved_by_the_agent(env: Env) -> None:
    second, first_sha = await _racing_edits(env)
    seen: list[Conflict] = []

    async def resolve(conflict: Conflict) -> bool:
        seen.append(conflict)
        text = (conflict.worktree / "a.py").read_text()
        assert "<<<<<<<" in text and ">>>>>>>" in text
        (conflict.worktree / "a.py").write_text("x = 30\ny = 2\n")
        return True

    landed = await land(second, message("S2", "Second"), env.auth, on_conflict=resolve)

    assert [c.files for c in seen] == [("a.py",)]
    assert seen[0].worktree == second.path and "a.py" in seen[0].details
    assert landed.rebased and landed.attempts == 1  # caught up before its first push
    assert env.git("rev-parse", f"{landed.sha}^").strip() == first_sha
    assert env.read("a.py") == "x = 30\ny = 2\n"
    assert env.read("other.py") == "o = 1\n"
    assert len(env.story_commits()) == 2
    assert env.raw_message(landed.sha) == message("S2", "Second").render()
    await cleanup(second)


async def test_a_clean_rebase_over_the_storys_own_files_is_rechecked(env: Env) -> None:
    """S1 and S2 edit different lines of a.py: git merges them without a conflict, but S2's
    checks passed without S1's line, so they run again before S2 is pushed."""
    lines = [f"v{i} = {i}\n" for i in range(8)]
    setup = await env.prepare("S0")
    (setup.path / "a.py").write_text("".join(lines))
    await land(setup, message("S0"), env.auth)
    await cleanup(setup)
    first, second = await asyncio.gather(env.prepare("S1"), env.prepare("S2"))
    (first.path / "a.py").write_text("".join(["v0 = 10\n", *lines[1:]]))
    (second.path / "a.py").write_text("".join([*lines[:-1], "v7 = 70\n"]))
    (second.path / "b.py").write_text("b = 1\n")
    merged = "".join(["v0 = 10\n", *lines[1:-1], "v7 = 70\n"])
    first_sha = (await land(first, message("S1"), env.auth)).sha
    await cleanup(first)
    seen: list[tuple[list[str], str]] = []

    async def red(overlap: Sequence[str]) -> None:
        seen.append((list(overlap), (second.path / "a.py").read_text()))
        raise LandError("verification", "checks failed after the rebase", overlap, ["boom"])

    with pytest.raises(LandError) as caught:
        await land(second, message("S2"), env.auth, on_rebased=red)
    assert caught.value.kind == "verification" and caught.value.evidence == ["boom"]
    assert seen == [(["a.py"], merged)]  # checked on the merged file
    assert env.head() == first_sha  # nothing pushed

    async def green(overlap: Sequence[str]) -> None:
        seen.append((list(overlap), ""))

    landed = await land(second, message("S2"), env.auth, on_rebased=green)
    assert env.head() == landed.sha and env.read("a.py") == merged
    await cleanup(second)


async def test_a_rebase_over_other_files_is_not_rechecked(env: Env) -> None:
    first, second = await asyncio.gather(env.prepare("S1"), env.prepare("S2"))
    (first.path / "one.py").write_text("one = 1\n")
    (second.path / "two.py").write_text("two = 2\n")
    await land(first, message("S1"), env.auth)
    await cleanup(first)
    calls: list[Sequence[str]] = []

    async def recheck(overlap: Sequence[str]) -> None:
        calls.append(overlap)

    landed = await land(second, message("S2"), env.auth, on_rebased=recheck)
    assert landed.rebased and calls == []
    await cleanup(second)


async def test_conflict_declined_leaves_the_branch_alone(env: Env) -> None:
    second, first_sha = await _racing_edits(env)

    async def give_up(conflict: Conflict) -> bool:
        return False

    with pytest.raises(LandError) as caught:
        await land(second, message("S2"), env.auth, on_conflict=give_up)
    assert caught.value.kind == "conflict"
    assert caught.value.files == ["a.py"]
    assert str(caught.value) == "conflicts with stories that landed first in: a.py"
    assert env.head() == first_sha
    await cleanup(second)


async def test_conflict_markers_left_in_place_fail(env: Env) -> None:
    second, first_sha = await _racing_edits(env)
    calls: list[int] = []

    async def claims_done(conflict: Conflict) -> bool:
        calls.append(conflict.round)
        return True

    with pytest.raises(LandError) as caught:
        await land(second, message("S2"), env.auth, on_conflict=claims_done)
    assert caught.value.kind == "conflict"
    assert calls == [1, 2]  # bounded by max_conflict_rounds
    assert env.head() == first_sha

    with pytest.raises(LandError) as caught:
        await land(second, message("S2"), env.auth)  # no callback at all
    assert caught.value.kind == "conflict" and caught.value.files == ["a.py"]
    assert env.head() == first_sha
    await cleanup(second)


async def test_no_change(env: Env) -> None:
    start = env.head()
    wt = await env.prepare("S1")
    with pytest.raises(LandError) as caught:
        await land(wt, message("S1"), env.auth)
    assert caught.value.kind == "no_change"
    assert str(caught.value) == "the story produced no changes (no work product)"
    assert env.head() == start
    await cleanup(wt)


async def test_workflow_change_is_refused_before_pushing(env: Env) -> None:
    start = env.head()
    wt = await env.prepare("S1")
    (wt.path / ".github" / "workflows").mkdir(parents=True)
    (wt.path / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    (wt.path / "a.py").write_text("x = 3\n")
    with pytest.raises(LandError) as caught:
        await land(wt, message("S1"), env.auth)
    assert caught.value.kind == "workflow"
    assert caught.value.files == [".github/workflows/ci.yml"]
    assert "no workflows permission" in str(caught.value)
    assert ".github/workflows/ci.yml cannot be pushed" in str(caught.value)
    assert env.head() == start
    await cleanup(wt)


async def test_find_landed_after_a_crash(env: Env) -> None:
    assert await env.ws.find_landed(env.ref, BRANCH, env.auth, RUN, "S1") is None
    wt = await env.prepare("S1")
    (wt.path / "b.py").write_text("b = 1\n")
    landed = await land(wt, message("S1"), env.auth)
    other = await env.prepare("S10")
    (other.path / "c.py").write_text("c = 1\n")
    await land(other, message("S10"), env.auth)
    await cleanup(wt)
    await cleanup(other)

    # A new runner process (fresh objects) on the same data dir, and one on a fresh machine.
    again = Workspaces(env.data_dir)
    assert await again.find_landed(env.ref, BRANCH, env.auth, RUN, "S1") == landed.sha
    elsewhere = Workspaces(env.data_dir.with_name("other-machine"))
    assert await elsewhere.find_landed(env.ref, BRANCH, env.auth, RUN, "S1") == landed.sha
    assert await again.find_landed(env.ref, BRANCH, env.auth, "r2", "S1") is None
    assert await again.find_landed(env.ref, BRANCH, env.auth, RUN, "S2") is None


async def test_the_idempotency_check_fetch_serves_the_worktree(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A story's start fetches the branch once: `find_landed`'s head is reused by `prepare`
    right after it, but never a stale one."""

    def fetches() -> int:
        # Every fetch starts with the ref advertisement, whatever the protocol version.
        log = env.hub.state.request_log("GET", rf"/{env.repo.full_name}\.git/info/refs$")
        return len(log)

    assert await env.ws.find_landed(env.ref, BRANCH, env.auth, RUN, "S1") is None
    before = fetches()
    wt = await env.prepare("S1")
    assert fetches() == before and wt.base == env.head()
    await cleanup(wt)

    again = await env.prepare("S2")  # nothing fresh left: fetches
    assert fetches() > before
    await cleanup(again)

    await env.ws.find_landed(env.ref, BRANCH, env.auth, RUN, "S1")
    monkeypatch.setattr(workspace, "FRESH_HEAD_SECONDS", 0.0)  # any age is too old now
    before = fetches()
    late = await env.prepare("S3")
    assert fetches() > before
    await cleanup(late)


async def test_landing_twice_does_not_stack_commits(env: Env) -> None:
    wt = await env.prepare("S1")
    (wt.path / "b.py").write_text("b = 1\n")
    first = await land(wt, message("S1"), env.auth)
    other = await env.prepare("S2")
    (other.path / "c.py").write_text("c = 1\n")
    await land(other, message("S2"), env.auth)

    # As if the first push's answer had been lost: land again from the same worktree.
    again = await land(wt, message("S1"), env.auth)
    assert again.sha == first.sha
    assert len(env.story_commits()) == 2
    await cleanup(wt)
    await cleanup(other)


async def test_server_errors_are_retried(env: Env) -> None:
    wt = await env.prepare("S1")
    (wt.path / "b.py").write_text("b = 1\n")
    git_path = rf"^/{env.repo.full_name}\.git/"
    env.hub.state.faults.add(method="POST", path=git_path + "git-receive-pack$", status=500)
    env.hub.state.faults.add(method="POST", path=git_path + "git-upload-pack$", status=502)
    landed = await land(wt, message("S1"), env.auth)
    assert landed.attempts == 2 and not landed.rebased
    assert env.head() == landed.sha
    await cleanup(wt)


async def test_bad_token_is_a_clear_error_without_the_token(env: Env) -> None:
    bad = GitAuth("ghs_" + "x" * 36)
    with pytest.raises(GitError) as caught:
        await env.ws.prepare(env.ref, BRANCH, bad, run_id=RUN, story_id="S1", attempt=1)
    assert bad.token not in str(caught.value)
    assert "fetch" in str(caught.value)

    start = env.head()
    wt = await env.prepare("S1")
    (wt.path / "b.py").write_text("b = 1\n")
    with pytest.raises(LandError) as landing:
        await land(wt, message("S1"), bad)
    assert landing.value.kind == "push"
    assert f"push to {BRANCH} failed" in str(landing.value)
    assert bad.token not in str(landing.value)
    assert env.head() == start
    await cleanup(wt)


async def test_repo_ref_refuses_credentials_and_odd_names() -> None:
    with pytest.raises(ValueError):
        RepoRef("octo/demo", "http://x-access-token:secret@127.0.0.1/octo/demo.git")
    with pytest.raises(ValueError):
        RepoRef("octo/..", "http://127.0.0.1/octo/demo.git")
    with pytest.raises(ValueError):
        RepoRef("octo/demo", "file:///tmp/demo.git")


async def test_mirror_lock_holds_across_instances(env: Env) -> None:
    """Two Workspaces on one data dir (as two runner processes) share the mirror's flock."""
    await env.ws.find_landed(env.ref, BRANCH, env.auth, RUN, "S1")  # creates the mirror
    other = Workspaces(env.data_dir)
    async with env.ws.mirrors.get(env.ref).locked():
        waiting = asyncio.create_task(other.find_landed(env.ref, BRANCH, env.auth, RUN, "S1"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    assert await asyncio.wait_for(waiting, 10) is None


class _GatedTurn(LandingTurn):
    """The run's real landing turn, whose first holder looks at the line only once
    `gate[0]` stories wait in it (stories that finish together, made deterministic)."""

    def __init__(self, redis: Any, gate: list[int]) -> None:
        super().__init__(redis, RUN)
        self.gate = gate

    async def waiting(self) -> list[Waiting]:
        for _ in range(1000):
            line = await super().waiting()
            if len(line) >= self.gate[0]:
                self.gate[0] = 0
                return line
            await asyncio.sleep(0.01)
        raise AssertionError(f"the line never held {self.gate[0]} stories")


def _receive_packs(env: Env) -> int:
    log = env.hub.state.request_log("GET", rf"/{env.repo.full_name}\.git/info/refs$")
    return sum("git-receive-pack" in r.query for r in log)


async def _land_together(
    env: Env,
    redis_url: str,
    changes: dict[str, dict[str, str]],
    on_rebased: OnRebased | None = None,
    turn: type[_GatedTurn] = _GatedTurn,
) -> list[Landed]:
    """Each story (story → files it writes) prepared at one base, then all landed at once
    through the run's real landing turn and line in Redis."""
    from app.queue import connect

    redis = connect(redis_url)
    try:
        trees = await asyncio.gather(*(env.prepare(sid) for sid in changes))
        for wt, files in zip(trees, changes.values(), strict=True):
            for name, text in files.items():
                (wt.path / name).write_text(text)
        gate = [len(changes) - 1]
        results = await asyncio.gather(
            *(
                land(
                    wt,
                    message(sid),
                    env.auth,
                    turn=turn(redis, gate),
                    on_rebased=on_rebased,
                )
                for sid, wt in zip(changes, trees, strict=True)
            )
        )
        assert await redis.exists(keys.landing_line(RUN)) == 0  # nobody left in line
    finally:
        await redis.aclose(close_connection_pool=True)
    for wt in trees:
        await cleanup(wt)
    return results


async def test_stories_that_finish_together_land_in_one_push(env: Env, redis_url: str) -> None:
    """Three stories in line at once: the turn's holder merges the other two onto its own
    commit and pushes all three once; each story gets its own commit on the branch."""
    pushes = _receive_packs(env)
    changes = {f"S{i}": {f"f{i}.py": f"v = {i}\n"} for i in (1, 2, 3)}
    results = await _land_together(env, redis_url, changes)
    assert _receive_packs(env) == pushes + 1
    assert sorted(r.attempts for r in results) == [0, 0, 1]  # one push, two taken along
    holder = next(r for r in results if r.attempts)
    assert holder.along == 2 and holder.head == env.head()
    commits = env.story_commits()
    assert len(commits) == 3
    for sid in changes:  # one commit per story, each with its own message
        assert sum(f"Baro-Story: {sid}" in c for c in commits) == 1, commits
    assert all(env.read(f"f{i}.py") == f"v = {i}\n" for i in (1, 2, 3))
    assert {r.sha for r in results} == set(env.git("rev-list", f"main..{BRANCH}").split())


async def test_a_waiting_story_that_must_recheck_lands_in_its_own_turn(
    env: Env, redis_url: str
) -> None:
    """Two stories change the same file without conflicting: the waiting one must run its
    checks on the merge, which only its own runner can, so it is not taken along."""
    rechecked: list[Sequence[str]] = []

    async def recheck(overlap: Sequence[str]) -> None:
        rechecked.append(overlap)

    lines = [f"v{i} = {i}\n" for i in range(8)]
    setup = await env.prepare("S0")
    (setup.path / "a.py").write_text("".join(lines))
    await land(setup, message("S0"), env.auth)
    await cleanup(setup)
    changes = {
        "S1": {"a.py": "".join(["v0 = 10\n", *lines[1:]])},
        "S2": {"a.py": "".join([*lines[:-1], "v7 = 70\n"])},
    }
    pushes = _receive_packs(env)
    results = await _land_together(env, redis_url, changes, on_rebased=recheck)
    assert _receive_packs(env) == pushes + 2
    assert sorted(r.attempts for r in results) == [1, 1]
    assert rechecked == [["a.py"]]
    assert env.read("a.py") == "".join(["v0 = 10\n", *lines[1:-1], "v7 = 70\n"])


async def test_a_conflicting_waiting_story_is_left_to_its_agent(env: Env, redis_url: str) -> None:
    """A waiting story whose merge conflicts is not taken along: it lands in its own turn,
    where the conflict goes back to its agent."""
    resolved: list[tuple[str, ...]] = []

    async def resolve(conflict: Conflict) -> bool:
        resolved.append(conflict.files)
        (conflict.worktree / "a.py").write_text("x = 3\ny = 2\n")
        return True

    from app.queue import connect

    redis = connect(redis_url)
    try:
        trees = await asyncio.gather(env.prepare("S1"), env.prepare("S2"))
        for wt, value in zip(trees, ("1_1", "2_2"), strict=True):
            (wt.path / "a.py").write_text(f"x = {value}\ny = 2\n")
        gate = [1]
        results = await asyncio.gather(
            *(
                land(wt, message(sid), env.auth, turn=_GatedTurn(redis, gate), on_conflict=resolve)
                for sid, wt in zip(("S1", "S2"), trees, strict=True)
            )
        )
    finally:
        await redis.aclose(close_connection_pool=True)
    assert sorted(r.attempts for r in results) == [1, 1]
    assert resolved == [("a.py",)]
    assert env.read("a.py") == "x = 3\ny = 2\n"
    assert len(env.story_commits()) == 2
    for wt in trees:
        await cleanup(wt)


async def test_hostile_or_broken_entries_in_the_line_are_ignored(env: Env, redis_url: str) -> None:
    """The line is read back from Redis: entries that are not JSON, carry option-shaped
    "shas", name another run or branch, or a commit this mirror lacks never reach git as
    such, are never pushed, and never stop the holder's push."""
    from app.queue import connect

    redis = connect(redis_url)
    fields: dict[str, Any] = {
        "run_id": RUN,
        "story_id": "S9",
        "branch": BRANCH,
        "sha": "c" * 40,
        "base": "d" * 40,
        "text": "x",
        "recheck": False,
        "author_name": "n",
        "author_email": "e@x",
    }

    def entry(at: int, ready: Ready) -> str:
        return json.dumps({"at": at, "ready": ready.model_dump_json()})

    hostile = {**fields, "sha": "--upload-pack=touch /tmp/x", "base": "--all"}
    assert Ready.decode(Ready.model_construct(**hostile).model_dump_json()) is None
    forged = {
        "junk": "not json",
        "noready": json.dumps({"at": 1}),
        "option": entry(2, Ready.model_construct(**hostile)),
        "elsewhere": entry(3, Ready(**{**fields, "branch": "baro/other"})),
        "missing": entry(4, Ready(**fields)),  # commits this mirror does not hold
    }
    try:
        wt = await env.prepare("S1")
        # a commit this mirror holds, that would merge cleanly, but of another run
        theirs = (
            await wt.mirror.git(
                ["commit-tree", f"{wt.base}^{{tree}}", "-p", wt.base, "-m", "elsewhere"],
                env=wt.identity.env(),
            )
        ).strip()
        real = {**fields, "sha": theirs, "base": wt.base}
        forged["other run"] = entry(5, Ready(**{**real, "run_id": "r-other"}))
        await redis.hset(keys.landing_line(RUN), mapping=forged)  # type: ignore[misc]
        (wt.path / "b.py").write_text("b = 1\n")
        landed = await land(wt, message("S1"), env.auth, turn=LandingTurn(redis, RUN))
        assert (landed.attempts, landed.along) == (1, 0)
        assert env.head() == landed.sha
        left: int = await redis.hlen(keys.landing_line(RUN))  # type: ignore[misc]
        assert left == len(forged)  # left alone
    finally:
        await redis.delete(keys.landing_line(RUN))
        await redis.aclose(close_connection_pool=True)
    await cleanup(wt)


class _ForgetfulTurn(_GatedTurn):
    """A holder that pushes a waiting story but dies before telling it."""

    async def landed(self, ticket: str, sha: str) -> None:
        raise ConnectionError("the holder's runner died")


async def test_a_story_pushed_but_never_told_finds_its_commit_itself(
    env: Env, redis_url: str
) -> None:
    """The holder's push carried a waiting story but the word never came: the story gets
    the turn later, finds its commit on the handed-on head, and pushes nothing again."""
    changes = {f"S{i}": {f"h{i}.py": f"v = {i}\n"} for i in (1, 2)}
    pushes = _receive_packs(env)
    results = await _land_together(env, redis_url, changes, turn=_ForgetfulTurn)
    assert _receive_packs(env) == pushes + 1
    assert sorted(r.attempts for r in results) == [0, 1]
    assert len(env.story_commits()) == 2
    assert {r.sha for r in results} == set(env.git("rev-list", f"main..{BRANCH}").split())


async def _in_turn(
    env: Env, redis_url: str, stories: list[str], between: Callable[[], None] | None = None
) -> list[Landed]:
    """Each story prepared at the same base, then landed one after another in the run's turn
    (a real Redis lock); `between()` runs after the first landing."""
    from app.queue import connect
    from app.store import RunStore

    redis = connect(redis_url)
    store = RunStore(redis)
    results = []
    try:
        trees = [await env.prepare(s) for s in stories]
        for i, wt in enumerate(trees):
            (wt.path / f"g{i}.py").write_text(f"w = {i}\n")
        for i, (sid, wt) in enumerate(zip(stories, trees, strict=True)):
            if i == 1 and between is not None:
                between()
            results.append(await land(wt, message(sid), env.auth, turn=store.landing_turn(RUN)))
    finally:
        await redis.aclose(close_connection_pool=True)
    for wt in trees:
        await cleanup(wt)
    return results


def _upload_packs(env: Env) -> int:
    log = env.hub.state.request_log("GET", rf"/{env.repo.full_name}\.git/info/refs$")
    return sum("git-upload-pack" in r.query for r in log)


async def test_the_next_in_turn_lands_on_the_pushed_head_without_fetching(
    env: Env, redis_url: str
) -> None:
    """The turn hands on the head its holder pushed: the next story merges onto it and
    pushes at once, without asking the server where the branch is."""
    fetched: list[int] = []
    results = await _in_turn(
        env, redis_url, ["S1", "S2"], lambda: fetched.append(_upload_packs(env))
    )
    assert _upload_packs(env) == fetched[0]
    assert [(r.attempts, r.rebased) for r in results] == [(1, False), (1, True)]
    assert env.head() == results[1].sha and len(env.story_commits()) == 2


async def test_a_branch_moved_outside_the_turn_is_fetched_not_overwritten(
    env: Env, redis_url: str
) -> None:
    """Someone pushes to the run branch between two landings: the handed-on head is stale,
    the push is refused, and the story merges onto what is really there."""

    def human_push() -> None:
        tree = env.git("rev-parse", f"refs/heads/{BRANCH}^{{tree}}").strip()
        who = ("-c", "user.name=Human", "-c", "user.email=human@example.com")
        parent = f"refs/heads/{BRANCH}"
        sha = env.git(*who, "commit-tree", tree, "-p", parent, "-m", "by hand").strip()
        env.git("update-ref", f"refs/heads/{BRANCH}", sha)

    results = await _in_turn(env, redis_url, ["S1", "S2"], human_push)
    assert [(r.attempts, r.rebased) for r in results] == [(1, False), (2, True)]
    messages = env.story_commits()
    assert len(messages) == 3 and "by hand" in messages
    assert env.read("g0.py") == "w = 0\n" and env.read("g1.py") == "w = 1\n"


async def test_warming_fetches_a_base_the_mirror_lacks_and_only_then(env: Env) -> None:
    """A warm-up fetches the announced base into a cold mirror; once it is there, neither
    another warm-up nor the first story's worktree (on the created head) asks the server."""
    base = env.head()
    assert base is not None
    before = _upload_packs(env)
    assert await env.ws.warm(env.ref, BRANCH, base, env.auth) is True
    fetched = _upload_packs(env)
    assert fetched > before
    assert await env.ws.warm(env.ref, BRANCH, base, env.auth) is False
    wt = await env.ws.prepare(
        env.ref, BRANCH, env.auth, run_id=RUN, story_id="S1", attempt=1, known_head=base
    )
    assert wt.base == base and _upload_packs(env) == fetched
    await cleanup(wt)


async def test_a_fetch_that_waited_for_one_bringing_its_commit_does_not_fetch_again(
    env: Env,
) -> None:
    base = env.head()
    assert base is not None
    await env.ws.warm(env.ref, BRANCH, base, env.auth)  # the mirror holds the base now
    mirror = env.ws.mirrors.get(env.ref)
    fetched = _upload_packs(env)
    assert await mirror.fetch(BRANCH, env.auth, unless=base) == base
    assert _upload_packs(env) == fetched
    assert await mirror.fetch(BRANCH, env.auth, unless="f" * 40) == base  # not here: fetched
    assert _upload_packs(env) > fetched

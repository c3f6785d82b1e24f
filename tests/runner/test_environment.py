"""A run's environment: an image from a real local registry as the sandbox's read-only root
(real skopeo, umoci and bubblewrap), its Env and shell; `setup:` made once and hard-linked
into worktrees, made again when a lock file changes; exit 127 names the environment."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from app.core.plan import Story
from app.core.routing import RepoConfig
from app.core.run import Run, RunEnvironment
from app.gitcmd import GitAuth
from app.llm.catalog import build_client
from app.llm.config import ModelConfig
from app.llm.meter import turn_pricer
from app.llm.prices import PriceTable
from runner.agent import StoryAgent, StoryBrief, VerifyResult
from runner.bwrap import Mount
from runner.environment import CACHE_MOUNT, Environments
from runner.images import ImageOptions, ImageStore, NoShell, Platform
from runner.limits import Limits, MiB
from runner.mirror import RepoRef
from runner.prepare import Preparation
from runner.sandbox import Sandbox, SandboxPolicy
from runner.setup import Provided, SetupFailed, Setups, redo_if_locks_changed, setup_key
from runner.worktree import Worktree
from testbed.registry import Registry, build_image

AMD64 = Platform("linux", "amd64")


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry().start()
    yield reg
    reg.stop()


@pytest.fixture
def data() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="baro-env-test-"))
    path.chmod(0o711)
    (path / "worktrees").mkdir(mode=0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def worktree(data: Path, name: str) -> Path:
    path = data / "worktrees" / name
    path.mkdir(mode=0o755)
    return path


def make_run(image: str | None, setup: list[str] | None = None) -> Run:
    return Run(
        id="r1",
        delivery_id="d1",
        installation_id=1,
        owner="Acme",
        repo="Shop",
        issue_number=1,
        issue_title="t",
        requester="ann",
        trigger="label",
        repo_config=RepoConfig(setup=setup or []),
        environment=RunEnvironment(image=image, source="baro.yml" if image else "default"),
    )


def environments(data: Path, registry: Registry) -> Environments:
    options = ImageOptions(insecure=frozenset({registry.host}), platform=AMD64)
    return Environments(data, ImageStore(data, options))


def sandbox(data: Path) -> Sandbox:
    limits = Limits(memory_bytes=1024 * MiB, processes=64, file_size_bytes=64 * MiB)
    return Sandbox(SandboxPolicy(limits=limits, hidden_paths=(data / "mirrors",)))


async def test_every_command_of_a_run_sees_its_image_as_a_read_only_root(
    registry: Registry, data: Path
) -> None:
    reg_image = build_image(
        data,
        files={"etc/os-release": b"ID=baro-image\n", "opt/tool/bin/hello": b"#!/bin/sh\necho hi\n"},
        env=["PATH=/opt/tool/bin:/bin", "TOOL_HOME=/opt/tool", "GPG_KEY=ABCDEF", "HOME=/root"],
        prepare=lambda root: (root / "opt/tool/bin/hello").chmod(0o755),
    )
    registry.push(reg_image, "test/env", "1")
    run = make_run(f"{registry.host}/test/env:1")
    wt = worktree(data, "S1")
    async with environments(data, registry).use(run) as renv:
        assert renv.digest is not None and renv.view.shell == "/bin/sh"  # busybox: no bash
        assert renv.name == f"image {registry.host}/test/env:1"
        box = renv.sandbox(sandbox(data))
        done = await box.run(
            "cat /etc/os-release; hello; echo $TOOL_HOME $HOME ${GPG_KEY:-none}; "
            "echo made > /workspace/out.txt; touch /etc/x 2>/dev/null || echo read-only; "
            "ls /usr/lib/python3* 2>/dev/null || echo no-host-usr",
            cwd=wt,
            timeout=60,
        )
    assert done.ok, done.output
    assert done.output.split() == [
        "ID=baro-image",
        "hi",
        "/opt/tool",
        "/home/sandbox",
        "none",
        "read-only",
        "no-host-usr",
    ]
    assert (wt / "out.txt").read_text() == "made\n"


async def test_the_digest_recorded_at_preparation_is_what_stories_use(
    registry: Registry, data: Path
) -> None:
    registry.push(build_image(data, files={"v": b"one\n"}), "test/pinned", "1")
    run = make_run(f"{registry.host}/test/pinned:1")
    envs = environments(data, registry)
    async with envs.use(run) as first:
        digest = first.digest
    assert run.environment is not None
    pinned = run.model_copy(
        update={"environment": run.environment.model_copy(update={"digest": digest})}
    )
    registry.push(build_image(data, files={"v": b"two\n"}), "test/pinned", "1")  # the tag moves
    wt = worktree(data, "S2")
    async with envs.use(pinned) as later:
        assert later.digest == digest
        done = await later.sandbox(sandbox(data)).run("cat /v", cwd=wt, timeout=30)
    assert done.output == "one\n"


async def test_an_image_without_a_shell_is_said(registry: Registry, data: Path) -> None:
    registry.push(build_image(data, shell=False, files={"app": b"x"}), "test/static", "1")
    with pytest.raises(NoShell, match="has no shell"):
        async with environments(data, registry).use(make_run(f"{registry.host}/test/static:1")):
            pass


async def test_a_missing_command_fails_naming_the_command_and_the_environment(
    registry: Registry, data: Path
) -> None:
    registry.push(build_image(data), "test/bare", "1")
    run = make_run(f"{registry.host}/test/bare:1")
    wt = worktree(data, "S3")
    story = Story(
        id="S1",
        title="t",
        description="d",
        writes=["x.py"],
        acceptance=["works"],
        tier="light",
        tests=["pytest -q tests/test_x.py"],
    )
    brief = StoryBrief(
        repo_full_name="acme/shop", run_id="r1", story=story, design_note="", plan_summary=""
    )
    config = ModelConfig(
        name="m",
        protocol="openai-chat",
        base_url="http://127.0.0.1:9/v1",  # never called: verify() needs no model
        model_id="m",
        api_key_env="X",
    )
    async with httpx.AsyncClient() as http, environments(data, registry).use(run) as renv:
        agent = StoryAgent(
            build_client(config, "sk-test", http),
            brief,
            wt,
            renv.sandbox(sandbox(data)),
            pricer=turn_pricer(PriceTable(as_of=date(2026, 1, 1), models={}), "m"),
            environment=renv.name,
        )
        [result] = await agent.verify()
    assert not result.passed and result.exit_code == 127
    assert result.status == (
        f"command not found in image {registry.host}/test/bare:1 (exit 127): "
        "`pytest -q tests/test_x.py`"
    )


async def test_setup_is_made_once_linked_into_worktrees_and_redone_on_a_lock_change(
    data: Path,
) -> None:
    """Default environment: a stand-in for `npm ci` that installs from the package cache
    and counts its runs, so sharing and the cache are visible."""
    run = make_run(None)
    envs = Environments(data, ImageStore(data))
    setup = [
        "mkdir -p node_modules/dep $npm_config_cache && cat package-lock.json > node_modules/dep/v"
        " && echo run >> $npm_config_cache/runs && cp $npm_config_cache/runs node_modules/.runs"
    ]
    base = worktree(data, "setup")
    (base / "package-lock.json").write_text("v1\n")
    box = sandbox(data)
    setups = Setups(data)
    async with envs.use(run) as renv:
        assert renv.setup_view().mounts == (
            Mount(envs.cache_dir("Acme", "Shop"), CACHE_MOUNT, True),
        )
        key = setup_key("acme/shop", "a" * 40, setup, None)
        made = await setups.ensure(key, base, setup, renv.sandbox(box, setup=True), renv.name)
        assert made.paths == ("node_modules",) and not (base / "node_modules").exists()
        again = await setups.ensure(key, base, setup, renv.sandbox(box, setup=True), renv.name)
        assert again.root == made.root  # made once

        stories = []
        for name in ("S1", "S2"):
            wt = worktree(data, name)
            (wt / "package-lock.json").write_text("v1\n")
            provided = await setups.link_into(made, wt)
            stories.append((wt, provided))
        (wt1, p1), (wt2, p2) = stories
        for wt in (wt1, wt2):
            seen = await box.run("cat node_modules/dep/v", cwd=wt, timeout=30)
            assert seen.output == "v1\n"
        link = (wt1 / "node_modules/dep/v").stat()
        assert link.st_ino == (made.tree / "node_modules/dep/v").stat().st_ino  # no copy
        assert not link.st_mode & 0o222  # read-only: an in-place write cannot reach S2
        overwrite = await box.run("echo evil > node_modules/dep/v", cwd=wt1, timeout=30)
        assert not overwrite.ok
        assert (wt2 / "node_modules/dep/v").read_text() == "v1\n"

        # S1 changes the lock file: setup runs again in S1 only, from the warm cache.
        setup_box = renv.sandbox(box, setup=True)
        assert not await redo_if_locks_changed(p2, wt2, setup, setup_box, renv.name)
        (wt1 / "package-lock.json").write_text("v2\n")
        assert await redo_if_locks_changed(p1, wt1, setup, setup_box, renv.name)
        assert (wt1 / "node_modules/dep/v").read_text() == "v2\n"
        assert (wt1 / "node_modules/.runs").read_text() == "run\nrun\n"  # the cache persisted
        assert (wt2 / "node_modules/dep/v").read_text() == "v1\n"
        assert p1.redone == 1 and p2.redone == 0

        failing = Provided(locks={"package-lock.json": "old"})
        with pytest.raises(SetupFailed, match=r"setup command \"exit 3\" exited with 3 in the"):
            await redo_if_locks_changed(failing, wt2, ["exit 3"], setup_box, renv.name)
    assert sorted(os.listdir(setups.root)) == sorted([key, f"{key}.lock"])


def test_verify_result_names_where_it_ran() -> None:
    result = VerifyResult(
        command="jest", source="story", exit_code=127, passed=False, environment="image node:22"
    )
    assert result.status == "command not found in image node:22 (exit 127): `jest`"


async def test_a_worktree_that_lost_its_dependencies_gets_them_linked_again(data: Path) -> None:
    """Landing rewrites the checkout after a rebase (everything not in the tree goes): the
    checks that follow must still find the setup result."""
    run = make_run(
        None, ["mkdir -p node_modules/dep && cat package-lock.json > node_modules/dep/v"]
    )
    run = run.model_copy(update={"branch": "baro/x", "base_sha": "b" * 40})
    assert run.repo_config is not None
    envs = Environments(data, ImageStore(data))
    box = sandbox(data)
    setups = Setups(data)
    prep = Preparation(
        store=None,  # type: ignore[arg-type]  # not used by provide/redo
        workspaces=None,  # type: ignore[arg-type]  # the result is made here already
        environments=envs,
        setups=setups,
        sandbox=box,
        access=None,  # type: ignore[arg-type]
        refresh=None,  # type: ignore[arg-type]
        runner_id="test",
    )
    repo = RepoRef("acme/shop", "http://unused")
    base = worktree(data, "base")
    (base / "package-lock.json").write_text("v1\n")
    async with envs.use(run) as renv:
        key = setup_key(repo.full_name, "b" * 40, run.repo_config.setup, None)
        await setups.ensure(
            key, base, run.repo_config.setup, renv.sandbox(box, setup=True), renv.name
        )
        path = worktree(data, "S1")
        (path / "package-lock.json").write_text("v1\n")
        wt = Worktree(
            path=path,
            mirror=None,  # type: ignore[arg-type]
            repo=repo,
            branch="baro/x",
            base="b" * 40,
            run_id="r1",
            story_id="S1",
            attempt=1,
        )
        provided = await prep.provide(run, renv, wt, GitAuth("t"))
        assert wt.excludes == ("/node_modules",)
        assert not await prep.redo(run, renv, wt, GitAuth("t"), provided)
        shutil.rmtree(path / "node_modules")  # what a reset after a rebase does
        assert not await prep.redo(run, renv, wt, GitAuth("t"), provided)
        assert (path / "node_modules/dep/v").read_text() == "v1\n"
        # And after a rebase that brought a new lock file: linked, then set up again.
        shutil.rmtree(path / "node_modules")
        (path / "package-lock.json").write_text("v2\n")
        assert await prep.redo(run, renv, wt, GitAuth("t"), provided)
        assert (path / "node_modules/dep/v").read_text() == "v2\n"

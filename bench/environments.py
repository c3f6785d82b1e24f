"""Environments benchmark: what a run's environment costs before and during its stories.

- time to the first story's first command, cold (the image pulled from a local registry
  and unpacked) and warm (the digest cached): `Environments.use` plus one sandboxed `true`;
- the setup cost of a 10-story run on the demo's TypeScript repository (`npm ci`, 280
  packages, ~4,800 files): one `npm ci` made as the run's setup result, then each story's
  worktree given it with hard links, against one `npm ci` alone (goal: at most 1.2x), and
  what a plain copy per story would cost instead;
- per-story worktree preparation with the dependencies present: the links, and the first
  command in the worktree (as root, lending the worktree to the sandbox uid walks it too).

Needs the npm registry, or `--npm-cache ~/.npm` for a warm package cache. Prints JSON.

    uv run python bench/environments.py --npm-cache ~/.npm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from app.core.routing import RepoConfig
from app.core.run import Run, RunEnvironment
from runner.environment import Environments
from runner.images import ImageOptions, ImageStore, Platform
from runner.sandbox import Sandbox, SandboxPolicy
from runner.setup import Setups, setup_key
from testbed.registry import Registry, build_image

DEMO = Path(__file__).resolve().parents[1] / "testbed" / "demo_ts" / "before"
SETUP = ["npm ci --no-audit --no-fund"]


def make_run(image: str | None) -> Run:
    return Run(
        id="rbench",
        delivery_id="d",
        installation_id=1,
        owner="acme",
        repo="stock-service",
        issue_number=1,
        issue_title="bench",
        requester="ann",
        trigger="label",
        repo_config=RepoConfig(setup=SETUP),
        environment=RunEnvironment(image=image, source="baro.yml" if image else "default"),
    )


def fresh_worktree(data: Path, name: str) -> Path:
    path = data / "worktrees" / name
    shutil.copytree(DEMO, path)
    path.chmod(0o755)
    return path


async def first_command(data: Path, registry: Registry, ref: str) -> float:
    start = time.perf_counter()
    options = ImageOptions(insecure=frozenset({registry.host}), platform=Platform())
    envs = Environments(data, ImageStore(data, options))
    wt = data / "worktrees" / f"first-{os.urandom(3).hex()}"
    wt.mkdir(mode=0o755)
    async with envs.use(make_run(ref)) as renv:
        done = await renv.sandbox(Sandbox(SandboxPolicy())).run("true", cwd=wt, timeout=60)
        assert done.ok, done.output
    return time.perf_counter() - start


async def image_start(work: Path, mb: int) -> dict[str, float]:
    registry = Registry().start()
    try:
        payload = {f"data/blob{i}.bin": os.urandom((mb << 20) // 8) for i in range(8)}
        registry.push(build_image(work, files=payload), "bench/env", "1")
        ref = f"{registry.host}/bench/env:1"
        data = work / "image-data"
        (data / "worktrees").mkdir(parents=True)
        data.chmod(0o711)
        (data / "worktrees").chmod(0o711)
        cold = await first_command(data, registry, ref)
        warm = [await first_command(data, registry, ref) for _ in range(5)]
        return {
            "image_mb": mb,
            "cold_s": round(cold, 3),
            "warm_s": round(statistics.median(warm), 3),
        }
    finally:
        registry.stop()


async def setup_cost(work: Path, stories: int, npm_cache: Path | None) -> dict[str, object]:
    data = work / "setup-data"
    (data / "worktrees").mkdir(parents=True)
    data.chmod(0o711)
    (data / "worktrees").chmod(0o711)
    envs = Environments(data, ImageStore(data))
    run = make_run(None)
    cache = envs.cache_dir(run.owner, run.repo)
    if npm_cache is not None and (npm_cache / "_cacache").is_dir():
        shutil.copytree(npm_cache / "_cacache", cache / "npm" / "_cacache", symlinks=True)
    sandbox = Sandbox(SandboxPolicy())
    setups = Setups(data)
    async with envs.use(run) as renv:
        setup_box = renv.sandbox(sandbox, setup=True)
        # One plain `npm ci` in the sandbox: the yardstick (its cache warmed the same way).
        alone = fresh_worktree(data, "alone")
        start = time.perf_counter()
        done = await setup_box.run(SETUP[0], cwd=alone, timeout=900, network=True)
        assert done.ok, done.output[-2000:]
        one_npm_ci = time.perf_counter() - start
        files = sum(len(f) for _, _, f in os.walk(alone / "node_modules"))

        start = time.perf_counter()
        made = await setups.ensure(
            setup_key("acme/stock-service", "0" * 40, SETUP, None),
            fresh_worktree(data, "base"),
            SETUP,
            setup_box,
            renv.name,
        )
        make_s = time.perf_counter() - start
        box = renv.sandbox(sandbox)
        links, firsts, copies = [], [], []
        for n in range(stories):
            wt = fresh_worktree(data, f"S{n + 1}")
            start = time.perf_counter()
            await setups.link_into(made, wt)
            links.append(time.perf_counter() - start)
            start = time.perf_counter()
            done = await box.run("test -d node_modules/jest", cwd=wt, timeout=60)
            assert done.ok, done.output
            firsts.append(time.perf_counter() - start)
        # The yardstick again: successive `npm ci` runs vary by seconds on a shared
        # machine, so one before and one after the made-once setup are averaged.
        again = fresh_worktree(data, "alone-again")
        start = time.perf_counter()
        done = await setup_box.run(SETUP[0], cwd=again, timeout=900, network=True)
        assert done.ok, done.output[-2000:]
        npm_ci_times = [one_npm_ci, time.perf_counter() - start]
        one_npm_ci = statistics.mean(npm_ci_times)
        for n in range(3):
            target = data / "worktrees" / f"copy-{n}"
            start = time.perf_counter()
            shutil.copytree(made.tree / "node_modules", target, symlinks=True)
            copies.append(time.perf_counter() - start)
    total = make_s + sum(links)
    return {
        "packages_files": files,
        "one_npm_ci_s": round(one_npm_ci, 2),
        "npm_ci_runs_s": [round(t, 2) for t in npm_ci_times],
        "setup_made_once_s": round(make_s, 2),
        "stories": stories,
        "link_per_story_s": round(statistics.median(links), 3),
        "first_command_with_deps_s": round(statistics.median(firsts), 3),
        "copy_per_story_s": round(statistics.median(copies), 3),
        "setup_total_s": round(total, 2),
        "setup_total_vs_one_npm_ci": round(total / one_npm_ci, 2),
        "per_story_npm_ci_total_s": round(one_npm_ci * stories, 1),
    }


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="baro-bench-env-", dir="/var/tmp"))
    os.chmod(work, 0o711)  # noqa: S103 - the sandbox uid walks to the worktrees
    try:
        result = {
            "first_story_start": await image_start(work, args.mb),
            "setup": await setup_cost(work, args.stories, args.npm_cache),
            "root": os.geteuid() == 0,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=40, help="size of the test image")
    parser.add_argument("--stories", type=int, default=10)
    parser.add_argument("--npm-cache", type=Path, default=None, help="e.g. ~/.npm (warm cache)")
    asyncio.run(main(parser.parse_args()))

"""The deployment files (Dockerfile, .dockerignore, fly.toml, the GitHub workflow) checked
against the project they deploy: its console scripts, routes, settings and shutdown timing.

There is no Docker daemon here, so the image is not built; instead the build stage's uv
steps run against a copy of the build context that .dockerignore lets through.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from app.settings import ENV_PREFIX, Settings, load_settings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
FLY_TOML = ROOT / "fly.toml"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
VENV_BIN = Path(sysconfig.get_path("scripts"))
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
SHUTDOWN_MARGIN_S = 10  # arq's cancellation and the on_shutdown hooks after the wait
FLY_MAX_KILL_TIMEOUT_S = 300


# ---- Dockerfile --------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                values[name] = value
        return values


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comment lines dropped."""
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        yield current + line
        current = ""
    if current:
        yield current


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """Stages in order; `FROM ${ARG}` is expanded with the global ARG defaults."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            arg, _, default = args.partition("=")
            global_args[arg] = default
        elif keyword == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=alias))
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def test_dockerfile_builds_in_stages_on_one_slim_python() -> None:
    stages = parse_dockerfile()
    final = stages[-1]
    assert len(stages) >= 2
    assert re.fullmatch(r"python:3\.1[1-9][.\d]*-slim(-\w+)?", final.base), final.base
    builders = [s for s in stages[:-1] if any("uv sync" in r for r in s.all("RUN"))]
    assert builders, "no stage runs uv sync"
    # The venv's python is a symlink into the base image: both must be the same image.
    assert {s.base for s in builders} == {final.base}


def test_build_stage_installs_the_locked_project_not_editable() -> None:
    build = next(s for s in parse_dockerfile() if any("uv sync" in r for r in s.all("RUN")))
    syncs = [r[r.index("uv sync") :] for r in build.all("RUN") if "uv sync" in r]
    assert all("--locked" in s.split() and "--no-dev" in s.split() for s in syncs), syncs
    assert "--no-editable" in syncs[-1].split()
    env = build.env()
    assert env["UV_PYTHON_DOWNLOADS"] == "never"  # the base image's /usr/local python
    assert env["UV_PYTHON"].startswith("/usr/local/")
    assert not env["UV_PROJECT_ENVIRONMENT"].startswith("/root")


def test_final_stage_runs_the_environment_as_a_non_root_user() -> None:
    stages = parse_dockerfile()
    final = stages[-1]
    venv = stages[-2].env()["UV_PROJECT_ENVIRONMENT"]
    assert any(c.split()[-1] == venv for c in final.all("COPY") if "--from=" in c)
    assert final.env()["PATH"].split(":")[0] == f"{venv}/bin"
    user = final.all("USER")[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert final.all("ENTRYPOINT") == ["[]"]
    assert json.loads(final.all("CMD")[-1]) == ["baro-bot", "web"]


def test_final_stage_installs_git_bubblewrap_and_certificates() -> None:
    installs = " ".join(r for r in parse_dockerfile()[-1].all("RUN") if "apt-get install" in r)
    for package in ("git", "bubblewrap", "ca-certificates"):
        assert package in installs.split(), package


def test_final_stage_carries_the_default_environment_and_the_image_tools() -> None:
    """What a repository without `image:` runs with (the README lists it), and what pulls
    the images of those that name one."""
    stages = parse_dockerfile()
    final = stages[-1]
    installs = " ".join(r for r in final.all("RUN") if "apt-get install" in r).split()
    for package in ("skopeo", "umoci", "make", "gcc", "g++", "libc6-dev", "pkg-config"):
        assert package in installs, package
    assert "--no-install-recommends" in installs
    copies = [c.split() for c in final.all("COPY") if c.startswith("--from=")]
    sources = {stage.name: stage.base for stage in stages}
    node = next(c for c in copies if c[0] == "--from=node")
    assert re.fullmatch(r"node:(2[02468])-bookworm-slim", sources["node"]), sources["node"]
    assert any(c[0] == "--from=uv" and "/uv" in c and "/uvx" in c for c in copies)
    assert node[-1].startswith("/usr/local/")
    env = final.env()
    # Under /usr, which the sandbox shows; HOME in the sandbox is an empty tmpfs.
    assert env["COREPACK_HOME"].startswith("/usr/")
    assert env["COREPACK_ENABLE_AUTO_PIN"] == "0"
    setup = " ".join(final.all("RUN"))
    assert "corepack enable" in setup and "pnpm" in setup and "yarn" in setup
    assert re.search(r"corepack install --global pnpm@\S+ yarn@\S+", setup)


def test_image_settings_are_real_settings_and_agree_with_fly() -> None:
    env = parse_dockerfile()[-1].env()
    fly = tomllib.loads(FLY_TOML.read_text())
    baro = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert baro["BARO_HOST"] == "0.0.0.0"  # noqa: S104 - a container must listen outside
    assert {k.removeprefix(ENV_PREFIX).lower() for k in baro} <= set(Settings.model_fields)
    for name in ("BARO_RUNNER_DATA_DIR", "BARO_PORT"):
        assert baro[name] == fly["env"][name], name


# ---- .dockerignore -----------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore matching: relative to the context, `**` spans directories."""
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, _pattern_regex(line.lstrip("!"))))
    return rules


def excluded(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """A path is excluded when it, or a directory above it, matches; the last rule wins."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            result = not negate
    return result


def build_context(dest: Path) -> Path:
    """Copy what `docker build .` would send: the repository less .dockerignore."""
    rules = _ignore_rules()
    for here, dirs, files in os.walk(ROOT):
        rel_dir = Path(here).relative_to(ROOT)
        dirs[:] = [d for d in dirs if not excluded((rel_dir / d).as_posix(), rules)]
        for name in files:
            rel = rel_dir / name
            if not excluded(rel.as_posix(), rules):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel, follow_symlinks=False)
    return dest


def test_dockerignore_keeps_what_the_build_needs_and_nothing_local() -> None:
    rules = _ignore_rules()
    needed = [
        "Dockerfile",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        ".gitignore",
        "app/cli.py",
        "app/llm/prices.json",
        "runner/worker.py",
        "testbed/__init__.py",
    ]
    assert [p for p in needed if excluded(p, rules)] == []
    local = [
        ".venv/bin/python",
        ".git/config",
        "app/__pycache__/cli.cpython-312.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/app",
        ".ruff_cache/CACHEDIR.TAG",
        "demo-state/logs/web.log",
        "summary.json",
        "bench/schedule.py",
        "tests/conftest.py",
        "app-private-key.pem",
        "keys/app.pem",
        ".env",
    ]
    assert [p for p in local if not excluded(p, rules)] == []


@pytest.mark.timeout(300)  # a cold uv cache downloads every locked package
def test_build_stage_uv_steps_install_a_working_baro_bot(tmp_path: Path) -> None:
    """Run the build stage's RUN steps as Docker would (bind mounts, then COPY . .), with the
    environment in a temporary directory, and use the result as the image would."""
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is not on PATH (scripts/install puts it there)"
    build = next(s for s in parse_dockerfile() if any("uv sync" in r for r in s.all("RUN")))
    context = build_context(tmp_path / "context")
    venv = tmp_path / "venv"
    # Keep uv's cache and index settings; drop whatever selects another project or python.
    keep = re.compile(r"UV_CACHE_DIR|UV_(DEFAULT_|EXTRA_)?INDEX(_URL)?|UV_NATIVE_TLS")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "VIRTUAL_ENV")) or keep.fullmatch(k)
    }
    env |= build.env()
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    env["UV_PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    workdir = tmp_path / "src"
    workdir.mkdir()
    for instruction in build.instructions:
        if instruction.keyword == "COPY" and not instruction.args.startswith("--from"):
            assert instruction.args.split() == [".", "."], instruction.args
            shutil.copytree(context, workdir, dirs_exist_ok=True)
        elif instruction.keyword == "RUN":
            words = shlex.split(instruction.args)
            mounts = [w.removeprefix("--mount=") for w in words if w.startswith("--mount=")]
            command = [w for w in words if not w.startswith("--mount=")]
            assert command[:2] == ["uv", "sync"], f"unexpected build step: {command}"
            bound = []
            for mount in mounts:
                spec = dict(part.split("=", 1) for part in mount.split(","))
                if spec["type"] == "bind":
                    shutil.copy2(context / spec["source"], workdir / spec["target"])
                    bound.append(workdir / spec["target"])
            result = subprocess.run(
                [uv, *command[1:]],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            for path in bound:  # a bind mount is gone after its RUN
                path.unlink()
    python = venv / "bin" / "python"
    probe = (
        "import importlib.resources, importlib.util, app, runner; "
        "print(app.__file__); "
        "print(importlib.resources.files('app.llm').joinpath('prices.json').is_file()); "
        "print(importlib.util.find_spec('pytest') is None)"
    )
    found = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(found[0]).is_relative_to(venv)  # installed, not pointing at the sources
    assert found[1:] == ["True", "True"]  # package data shipped; dev tools left out
    for process in fly_processes().values():
        assert_help_exits_zero(venv / "bin", shlex.split(process))


# ---- fly.toml ----------------------------------------------------------------------------


def fly() -> dict[str, Any]:
    return tomllib.loads(FLY_TOML.read_text())


def fly_processes() -> dict[str, str]:
    processes: dict[str, str] = fly()["processes"]
    return processes


def _without_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def assert_help_exits_zero(bin_dir: Path, argv: list[str]) -> None:
    script = bin_dir / argv[0]
    assert script.is_file(), f"{argv[0]} is not installed in {bin_dir}"
    result = subprocess.run(
        [str(script), *argv[1:], "--help"],
        env=_without_settings(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (argv, result.stderr)
    assert "usage:" in result.stdout


def test_every_process_command_is_an_installed_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    processes = fly_processes()
    assert set(processes) == {"web", "worker", "runner"}
    for name, command in processes.items():
        argv = shlex.split(command)
        assert argv[0] in scripts, command
        assert argv[1] == name, command
        assert_help_exits_zero(VENV_BIN, argv)


def test_only_web_receives_traffic_on_the_port_it_listens_on() -> None:
    config = fly()
    service = config["http_service"]
    assert service["processes"] == ["web"]
    assert "services" not in config  # no other group is exposed
    web = shlex.split(fly_processes()["web"])
    port = web[web.index("--port") + 1]
    assert service["internal_port"] == int(port) == int(config["env"]["BARO_PORT"])
    assert f"EXPOSE {port}" in DOCKERFILE.read_text()
    assert service["auto_stop_machines"] == "off"
    assert service["min_machines_running"] >= 1
    assert service["force_https"] is True


def secrets(pem: str, redis_url: str) -> dict[str, str]:
    """What `fly secrets set` provides in production."""
    return {
        "BARO_GITHUB_APP_ID": "123",
        "BARO_GITHUB_APP_SLUG": "baro-test",
        "BARO_GITHUB_WEBHOOK_SECRET": "deploy-test-secret",
        "BARO_GITHUB_PRIVATE_KEY": pem,
        "BARO_REDIS_URL": redis_url,
    }


def test_fly_env_is_valid_settings_and_holds_no_secret(
    monkeypatch: pytest.MonkeyPatch, pem: str
) -> None:
    env = fly()["env"]
    assert {k.removeprefix(ENV_PREFIX).lower() for k in env} <= set(Settings.model_fields)
    secret_like = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|REDIS_URL|APP_ID")
    assert [k for k in env if secret_like.search(k)] == []
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in (env | secrets(pem, "redis://127.0.0.1:1/0")).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.runner_data_dir == Path(env["BARO_RUNNER_DATA_DIR"])
    assert settings.sandbox == "bwrap"


def _with_option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def test_health_check_path_is_served_by_the_web_process(pem: str, redis_url: str) -> None:
    """Start the web group's command (on a free local port) with fly's [env] and check what
    Fly's proxy would: the configured method and path answer 200 within the timeout."""
    check = fly()["http_service"]["checks"][0]
    timeout = float(check["timeout"].removesuffix("s"))
    port = free_port()
    argv = shlex.split(fly_processes()["web"])
    argv = _with_option(_with_option(argv, "--host", "127.0.0.1"), "--port", str(port))
    env = _without_settings() | fly()["env"] | secrets(pem, redis_url)
    proc = subprocess.Popen(
        [str(VENV_BIN / argv[0]), *argv[1:]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.request(check["method"], base + check["path"], timeout=timeout)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "web did not start listening"
                time.sleep(0.1)
        assert response.status_code == 200, response.text
        assert response.json()["redis"] == "ok"
        assert httpx.get(base + "/no-such-path", timeout=timeout).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()


async def test_kill_timeout_covers_the_graceful_shutdowns(pem: str) -> None:
    """Fly waits kill_timeout after kill_signal before killing: at least as long as each arq
    worker waits for its jobs (job_completion_wait), plus time for its shutdown hooks."""
    from app.worker.main import build_worker as build_orchestrator
    from runner.worker import build_worker as build_runner

    config = fly()
    assert config["kill_signal"] in ("SIGTERM", "SIGINT")  # both are graceful in arq/uvicorn
    settings = Settings(
        github_app_id=1,
        github_private_key=SecretStr(pem),
        github_webhook_secret=SecretStr("x"),
        github_app_slug="baro-test",
        redis_url="redis://127.0.0.1:1/0",
    )
    waits: dict[str, int] = {}
    for group, build in (("worker", build_orchestrator), ("runner", build_runner)):
        worker = build(settings, handle_signals=False)
        try:
            waits[group] = worker._job_completion_wait
        finally:
            assert worker.on_shutdown is not None
            await worker.on_shutdown(worker.ctx)  # closes its (unused) Redis client
    assert waits["worker"] > 0 and waits["runner"] > 0, waits
    needed = max(waits.values()) + SHUTDOWN_MARGIN_S
    assert needed <= config["kill_timeout"] <= FLY_MAX_KILL_TIMEOUT_S, (waits, needed)


def test_runner_volume_holds_the_data_dir_and_every_group_has_a_size() -> None:
    config = fly()
    mounts = config["mounts"]
    assert len(mounts) == 1
    assert mounts[0]["processes"] == ["runner"]
    data_dir = PurePosixPath(config["env"]["BARO_RUNNER_DATA_DIR"])
    assert PurePosixPath(mounts[0]["destination"]) == data_dir.parent
    sized = [group for vm in config["vm"] for group in vm["processes"]]
    assert sorted(sized) == sorted(fly_processes())


# ---- GitHub workflow ---------------------------------------------------------------------


def workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def find_actionlint() -> str | None:
    found = shutil.which("actionlint")
    if found:
        return found
    for candidate in (Path.home() / ".local/bin/actionlint", Path.home() / "go/bin/actionlint"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def lint_workflow(path: Path) -> tuple[int, str]:
    """actionlint where installed (required where REQUIRE_ACTIONLINT is set, as on GitHub);
    otherwise the GitHub workflow JSON schema that check-jsonschema ships."""
    actionlint = find_actionlint()
    if actionlint:
        command = [actionlint, "-no-color", "-oneline", str(path)]
    else:
        assert not os.environ.get("REQUIRE_ACTIONLINT"), "actionlint is not installed"
        command = [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    return result.returncode, result.stdout + result.stderr


def test_workflow_lints_clean() -> None:
    code, output = lint_workflow(WORKFLOW)
    assert code == 0, output


def test_the_linter_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "ci.yml"
    text = WORKFLOW.read_text()
    assert "timeout-minutes:" in text
    broken.write_text(text.replace("timeout-minutes:", "timeout-minute:", 1))
    code, output = lint_workflow(broken)
    assert code != 0
    assert "timeout-minute" in output


def test_workflow_has_least_privilege_and_pinned_actions() -> None:
    data = workflow()
    assert data["permissions"] == {"contents": "read"}
    uses_lines = [line for line in WORKFLOW.read_text().splitlines() if "uses:" in line]
    assert uses_lines
    for line in uses_lines:
        match = re.search(r"uses:\s*(\S+)\s*#\s*(v\d+(?:\.\d+)*)\s*$", line)
        assert match, f"pin with a version comment: {line.strip()}"
        assert SHA_PIN.match(match.group(1)), line.strip()
    for job in data["jobs"].values():
        assert "permissions" not in job  # nothing widens the top-level grant
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_workflow_runs_bounded_and_supersedable() -> None:
    data = workflow()
    triggers = data["on"] if "on" in data else data[True]  # YAML 1.1: a bare `on` is true
    assert {"push", "pull_request"} <= set(triggers)
    assert data["concurrency"]["cancel-in-progress"] is True
    for name, job in data["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 60, name


def _runs(job: dict[str, Any]) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def test_workflow_runs_the_readme_commands_on_both_pythons() -> None:
    jobs = workflow()["jobs"]
    readme = (ROOT / "README.md").read_text()
    assert "scripts/test" in readme and "scripts/check" in readme
    ci_test = next(
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.startswith("scripts/test")
    )
    runs = {name: _runs(job) for name, job in jobs.items()}
    assert any("scripts/check" in lines for lines in runs.values())
    testing = [name for name, lines in runs.items() if ci_test in lines]
    assert len(testing) == 1, runs
    job = jobs[testing[0]]
    assert {"3.11", "3.12"} <= set(job["strategy"]["matrix"]["python-version"])
    setup = " ".join(line for line in _runs(job) if "apt-get install" in line)
    assert {"bubblewrap", "redis-server", "git"} <= set(setup.split())
    assert "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in _runs(job)

"""The agent CLIs a story can run (Claude Code, Codex): pinned npm versions and where
`scripts/install` puts them, so tests and the runner find them at one known path.

Each engine is installed with npm into `.engines/<name>-<version>/` in the checkout, and
`.engines/bin/<command>` links to its native binary (neither needs Node.js to run).
Versions move fast and the wire traffic changes with them: bump a pin only after
re-observing the requests (see testbed/models/README.md).

    python -m runner.engines install   # idempotent; a second run only checks stamps
    python -m runner.engines path claude-code
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.safe_env import GATEWAY_DUMMY_KEY

ROOT = Path(__file__).resolve().parents[1]
STAMP = ".baro-installed.json"


@dataclass(frozen=True)
class Engine:
    name: str
    package: str
    version: str
    command: str

    def prefix(self, base: Path) -> Path:
        return base / f"{self.name}-{self.version}"

    def binary(self, base: Path) -> Path:
        """The stable path tests and the runner use: `.engines/bin/<command>`."""
        return base / "bin" / self.command


CLAUDE_CODE = Engine("claude-code", "@anthropic-ai/claude-code", "2.1.197", "claude")
CODEX = Engine("codex", "@openai/codex", "0.171.0", "codex")
ENGINES: dict[str, Engine] = {e.name: e for e in (CLAUDE_CODE, CODEX)}


class EngineMissing(RuntimeError):
    """An engine is not installed where it should be."""


def engines_dir() -> Path:
    return ROOT / ".engines"


def engine_binary(engine: Engine, base: Path | None = None) -> Path:
    """The installed binary, or EngineMissing naming the command that installs it."""
    base = base or engines_dir()
    path = engine.binary(base)
    if not _stamp(engine, base) or not os.access(path, os.X_OK):
        raise EngineMissing(
            f"{engine.package}@{engine.version} is not installed under {base}: run scripts/install"
        )
    return path


def _stamp(engine: Engine, base: Path) -> dict[str, object] | None:
    try:
        data = json.loads((engine.prefix(base) / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == engine.version else None


def _native(engine: Engine, prefix: Path) -> Path:
    """The package's native binary (not the Node.js wrapper npm links)."""
    modules = prefix / "node_modules"
    if engine is CLAUDE_CODE:
        return modules / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
    arch = machine[platform.machine().lower()]
    triple = {"x64": "x86_64", "arm64": "aarch64"}[arch] + "-unknown-linux-musl"
    return modules / "@openai" / f"codex-linux-{arch}" / "vendor" / triple / "bin" / "codex"


def _size(path: Path) -> int:
    """Bytes on disk as `du` counts them: a hard-linked binary once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            info = (Path(root) / name).lstat()
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def install(engine: Engine, base: Path | None = None, *, log: bool = True) -> Path:
    """npm-install `engine` once; later calls only check its stamp and the link."""
    base = base or engines_dir()
    prefix = engine.prefix(base)
    if _stamp(engine, base) is None:
        work = base / f".partial-{engine.name}-{engine.version}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        spec = f"{engine.package}@{engine.version}"
        if log:
            print(f"==> npm install {spec} into {prefix}", flush=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(work), "--no-audit", "--no-fund",
             "--no-save", "--loglevel=error", spec],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if engine is CLAUDE_CODE:
            _place_claude_binary(work)
        native = _native(engine, work)
        version = subprocess.run(
            [str(native), "--version"], check=True, capture_output=True, text=True, timeout=60
        ).stdout
        if engine.version not in version:
            raise EngineMissing(f"{spec}: --version printed {version.strip()!r}")
        shutil.rmtree(prefix, ignore_errors=True)
        work.rename(prefix)
        stamp = {"version": engine.version, "package": engine.package, "bytes": _size(prefix)}
        (prefix / STAMP).write_text(json.dumps(stamp) + "\n")
    _link(engine, base)
    for old in base.glob(f"{engine.name}-*"):
        if old != prefix and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return engine.binary(base)


def _place_claude_binary(prefix: Path) -> None:
    """npm 11 may skip the postinstall that swaps the placeholder for the native binary;
    running it again fetches nothing (the binary comes in a platform package)."""
    package = prefix / "node_modules" / "@anthropic-ai" / "claude-code"
    if (package / "bin" / "claude.exe").stat().st_size < 4096:
        subprocess.run(["node", "install.cjs"], cwd=package, check=True)


def _link(engine: Engine, base: Path) -> None:
    link = engine.binary(base)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(_native(engine, engine.prefix(base)), link.parent)
    if link.is_symlink() and os.readlink(link) == target:
        return
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(link)


def installed_size(engine: Engine, base: Path | None = None) -> int | None:
    stamp = _stamp(engine, base or engines_dir())
    size = stamp.get("bytes") if stamp else None
    return size if isinstance(size, int) else None


DUMMY_KEY = GATEWAY_DUMMY_KEY
"""What a CLI is given as its key: the gateway strips it and adds the real one."""
CODEX_KEY_ENV = "BARO_MODEL_KEY"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Invocation:
    """How to start an engine: argv and the whole environment (nothing inherited)."""

    argv: list[str]
    env: dict[str, str]
    files: dict[Path, str] = field(default_factory=dict)
    """Config files written under HOME before the start (Codex's config.toml)."""

    def prepare(self) -> None:
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def _env(home: Path, path: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", "TMPDIR": str(home / "tmp")}


def claude_invocation(
    prompt: str,
    *,
    base_url: str,
    home: Path,
    api_key: str = DUMMY_KEY,
    model: str | None = None,
    extra_args: Sequence[str] = (),
    path: str = DEFAULT_PATH,
    base: Path | None = None,
) -> Invocation:
    """Claude Code in print mode against `base_url` (no `/v1`): stream-json events on
    stdout, no permission prompts, no traffic but the model calls."""
    env = _env(home, path) | {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    if os.geteuid() == 0:
        env["IS_SANDBOX"] = "1"  # else --dangerously-skip-permissions is refused as root
    argv = [str(engine_binary(CLAUDE_CODE, base)), "-p", prompt]
    argv += ["--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"]
    if model is not None:
        argv += ["--model", model]
    return Invocation([*argv, *extra_args], env, {home / "tmp" / ".keep": ""})


def codex_config(base_url: str, model: str) -> str:
    """A custom provider speaking Responses (`wire_api = "chat"` is refused by 0.171)."""
    return (
        f"model = {json.dumps(model)}\n"
        'model_provider = "baro"\n'
        "\n[model_providers.baro]\n"
        'name = "baro gateway"\n'
        f"base_url = {json.dumps(base_url.rstrip('/') + '/v1')}\n"
        f"env_key = {json.dumps(CODEX_KEY_ENV)}\n"
        'wire_api = "responses"\n'
    )


def codex_invocation(
    prompt: str,
    *,
    base_url: str,
    home: Path,
    api_key: str = DUMMY_KEY,
    model: str = "gpt-5.5",
    extra_args: Sequence[str] = (),
    path: str = DEFAULT_PATH,
    base: Path | None = None,
) -> Invocation:
    """`codex exec --json` against `base_url` (no `/v1`), with its config in HOME/.codex.

    The model name decides the tools Codex offers: for gpt-5.5 `apply_patch` is a freeform
    tool; for a name it does not know it warns and offers `exec_command` but no patch tool.
    Its own sandbox is off: the runner's sandbox is the boundary.
    """
    codex_home = home / ".codex"
    env = _env(home, path) | {"CODEX_HOME": str(codex_home), CODEX_KEY_ENV: api_key}
    argv = [str(engine_binary(CODEX, base)), "exec", "--json", "--skip-git-repo-check"]
    argv += ["--dangerously-bypass-approvals-and-sandbox", *extra_args, prompt]
    files = {codex_home / "config.toml": codex_config(base_url, model), home / "tmp" / ".keep": ""}
    return Invocation(argv, env, files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.engines")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install every pinned engine (idempotent)")
    path_cmd = sub.add_parser("path", help="print an installed engine's binary")
    path_cmd.add_argument("engine", choices=sorted(ENGINES))
    args = parser.parse_args(argv)
    if args.command == "install":
        for engine in ENGINES.values():
            install(engine)
            size = installed_size(engine) or 0
            print(f"    {engine.package}@{engine.version}: {size / 1e6:.0f} MB", flush=True)
        return 0
    try:
        print(engine_binary(ENGINES[args.engine]))
    except EngineMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

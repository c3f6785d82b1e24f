"""The README is the operator's manual: every command in it runs, every setting is in it.

Commands are taken from its code blocks and inline code. Ours (`scripts/…`, `baro-bot …`,
`bench/…`, `bash .ci/run`) must exist and accept the flags shown (`--help` in the project's
environment); the demo and the tests run them in full elsewhere. flyctl cannot run here (no
network, no Fly account), so `fly …` lines are held to the subcommands fly.toml's comments
and tests/test_deploy.py describe; a new kind of command fails this test until it is covered.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from app.core.routing import RepoConfig, RoutingConfig
from app.llm.config import ModelConfig
from app.settings import Settings
from app.web.setup import SetupSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
PREFIXES = ("scripts/", "uv run", "bash ", "baro-bot ", "fly ", "curl ")
FLY_SUBCOMMANDS = {
    ("apps", "create"),
    ("redis", "create"),
    ("redis", "status"),
    ("secrets", "set"),
    ("volumes", "create"),
    ("deploy",),
    ("scale", "count"),
    ("status",),
    ("logs",),
    ("auth", "login"),
}


def commands() -> list[str]:
    """Shell lines from ```sh blocks, indented code blocks, and inline code."""
    found: list[str] = []
    in_fence: str | None = None
    for line in README.splitlines():
        fence = re.match(r"^```(\w*)", line)
        if fence:
            in_fence = None if in_fence is not None else fence.group(1)
            continue
        if in_fence == "sh" or (in_fence is None and re.match(r"^ {4,}\S", line)):
            stripped = line.strip()
            if stripped.startswith(PREFIXES) or re.match(r"^[A-Z_]+=\S+ ", stripped):
                found.append(stripped)
        if in_fence is None and not line.startswith("    "):
            found += [c for c in re.findall(r"`([^`]+)`", line) if c.startswith(PREFIXES)]
    return found


def words(command: str) -> list[str]:
    """The command's words without a trailing comment or leading VAR=value assignments."""
    parts = shlex.split(command, comments=True)
    while parts and re.match(r"^[A-Z_]+=", parts[0]):
        parts.pop(0)
    if parts[:2] == ["uv", "run"]:
        parts = parts[2:]
    return parts


@cache
def help_text(*argv: str) -> str:
    done = subprocess.run(
        [*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} --help failed:\n{done.stderr}"
    return done.stdout


def flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def check(command: str, pem: str) -> None:
    argv = words(command)
    assert argv, command
    head = argv[0]
    if head.startswith("scripts/"):
        script = ROOT / head
        assert script.is_file() and script.stat().st_mode & 0o111, f"{head} is not executable"
        if head == "scripts/demo":
            shown = help_text(sys.executable, "-m", "testbed.demo")
            assert all(f in shown for f in flags(argv)), (command, shown)
    elif head == "bash":
        assert (ROOT / argv[1]).is_file(), command
    elif head == "baro-bot":
        shown = help_text(str(BIN / "baro-bot"), argv[1])
        assert all(f in shown for f in flags(argv)), (command, shown)
    elif head == "python" and argv[1].startswith("bench/"):
        shown = help_text(sys.executable, argv[1])
        assert all(f in shown for f in flags(argv)), (command, shown)
    elif head == "fly":
        subcommand = tuple(w for w in argv[1:3] if not w.startswith("-") and "=" not in w)
        assert subcommand[:2] in FLY_SUBCOMMANDS or subcommand[:1] in FLY_SUBCOMMANDS, command
    elif head == "curl":
        from app.web.app import create_app

        path = "/" + argv[-1].split("://", 1)[1].split("/", 1)[1]
        app = create_app(_settings(pem))
        assert path in {getattr(r, "path", None) for r in app.routes}, command
    else:
        pytest.fail(f"README command not covered by a test: {command}")


def _settings(pem: str) -> Settings:
    return Settings(
        github_app_id=1,
        github_private_key=pem,  # type: ignore[arg-type]
        github_webhook_secret="s",  # type: ignore[arg-type]
        github_app_slug="baro-bot",
    )


def test_the_readme_has_commands() -> None:
    found = [" ".join(words(c)) for c in commands()]
    assert "scripts/demo" in found and "scripts/test" in found
    assert any(c.startswith("fly deploy") for c in found)
    assert len(found) > 15


@pytest.mark.parametrize("command", sorted(set(commands())))
def test_every_command_in_the_readme_exists(command: str, pem: str) -> None:
    check(command, pem)


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    fields = {f for f in Settings.model_fields if f != "model_keys"} | set(
        SetupSettings.model_fields
    )
    variables = {f"BARO_{name.upper()}" for name in fields}
    documented = set(re.findall(r"\bBARO_[A-Z_]+\b", README))
    assert variables - documented == set(), "settings missing from the README"
    assert documented - variables == set(), "the README names settings that do not exist"


def test_every_repository_key_is_in_the_baro_yml_table() -> None:
    table = README.split("### Per repository: `.github/baro.yml`", 1)[1].split("\n## ", 1)[0]
    keys = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    assert keys == set(RepoConfig.model_fields)


def test_the_models_example_is_a_valid_configuration() -> None:
    block = README.split("### Models", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    models = json.loads(re.search(r"BARO_MODELS='(.*?)'", block, re.S).group(1))  # type: ignore[union-attr]
    routing = json.loads(re.search(r"BARO_ROUTING='(.*?)'", block, re.S).group(1))  # type: ignore[union-attr]
    names = [ModelConfig.model_validate(m).name for m in models]
    assert RoutingConfig.model_validate(routing).unknown_models(names) == []

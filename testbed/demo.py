"""The local demo: the whole bot against the testbed GitHub and the scripted models.

Starts a private Redis, the testbed GitHub and the scripted model server (in this process),
`baro-bot web` and `baro-bot worker` (as subprocesses, exactly as deployed), creates a small
Python repository and an issue, delivers a signed `issues.labeled` webhook and prints what
a maintainer would see. Everything it started is stopped at the end.

    uv run python -m testbed.demo
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import redis

from app import keys
from testbed.github.delivery import deliver, issue_labeled_payload
from testbed.github.server import running_testbed
from testbed.github.state import GitHubState
from testbed.models.harness import running_model_server
from testbed.waiting import TimedOut, wait_until

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

DEMO_REPO = Path(__file__).resolve().parent / "demo_repo"
FINAL_LABELS = {"baro:done", "baro:failed"}


def _tree(root: Path) -> dict[str, str]:
    """The fixture repository's files (bytecode left by running its tests is not one)."""
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


REPO_FILES: dict[str, str | bytes] = dict(_tree(DEMO_REPO / "before"))
AFTER = _tree(DEMO_REPO / "after")

ISSUE_TITLE = "CSV export and a low-stock report"
ISSUE_BODY = (
    "We need to export the inventory as CSV and print a report of items at or below their "
    "reorder level, both from a small CLI (`python -m inventory export|low-stock`). "
    "Removing more than is in stock should raise instead of going negative."
)

STORIES: list[dict[str, Any]] = [
    {
        "id": "S1",
        "title": "Refuse to remove more than is in stock",
        "description": "Inventory.remove raises OutOfStock (new, in core.py) instead of going "
        "negative.",
        "writes": ["inventory/core.py", "tests/test_core.py"],
        "acceptance": ["remove() beyond the quantity raises OutOfStock"],
        "tests": ["python3 -m unittest tests.test_core"],
        "tier": "light",
    },
    {
        "id": "S2",
        "title": "CSV export",
        "description": "inventory/export.py: to_csv(inv) -> str with header sku,name,quantity.",
        "writes": ["inventory/export.py", "tests/test_export.py"],
        "acceptance": ["rows sorted by sku", "header line first"],
        "tests": ["python3 -m unittest tests.test_export"],
        "tier": "standard",
    },
    {
        "id": "S3",
        "title": "Low-stock report",
        "description": "inventory/report.py: low_stock(inv) -> list[Item] and format_report().",
        "writes": ["inventory/report.py", "tests/test_report.py"],
        "acceptance": ["items at or below reorder_level are listed"],
        "tests": ["python3 -m unittest tests.test_report"],
        "tier": "standard",
    },
    {
        "id": "S4",
        "title": "Command-line interface",
        "description": "inventory/__main__.py with subcommands export and low-stock.",
        "depends_on": ["S2", "S3"],
        "writes": ["inventory/__main__.py"],
        "acceptance": ["python -m inventory export prints CSV"],
        "tests": ["python3 -m inventory --help"],
        "tier": "standard",
    },
    {
        "id": "S5",
        "title": "CLI tests",
        "description": "tests/test_cli.py runs both subcommands on a sample inventory.",
        "depends_on": ["S4", "S1"],
        "writes": ["tests/test_cli.py"],
        "acceptance": ["both subcommands covered"],
        "tests": ["python3 -m unittest tests.test_cli"],
        "tier": "light",
    },
    {
        "id": "S6",
        "title": "Document the CLI",
        "description": "README section with both commands and an example.",
        "depends_on": ["S4"],
        "writes": ["README.md"],
        "acceptance": ["README shows both commands"],
        "tests": ["grep -q low-stock README.md"],
        "tier": "light",
    },
]


def story_turns(
    story: dict[str, Any],
    before: dict[str, str | bytes] = REPO_FILES,
    after: dict[str, str] = AFTER,
    package: str = "inventory",
) -> list[dict[str, Any]]:
    """A cheap model doing one story: look, write the files, run the test, finish."""
    files = story["writes"]
    look = files[0] if files[0] in before else files[0].rsplit("/", 1)[0] or "."
    if look not in before and look != ".":
        look = package
    writes = [
        {"name": "editor", "arguments": {"command": "create", "path": f, "file_text": after[f]}}
        for f in files
    ]
    return [
        {
            "tool_calls": [{"name": "editor", "arguments": {"command": "view", "path": look}}],
            "usage": {"input": 3100, "output": 90},
            "latency": 0.4,
        },
        {
            "tool_calls": writes,
            "usage": {"input": 1200, "cached": 3100, "output": 700},
            "latency": 1.0,
        },
        {
            "tool_calls": [{"name": "bash", "arguments": {"command": story["tests"][0]}}],
            "usage": {"input": 900, "cached": 4300, "output": 60},
            "latency": 0.3,
        },
        {
            "tool_calls": [
                {
                    "name": "finish",
                    "arguments": {"summary": f"{story['title']}: {story['description']}"},
                }
            ],
            "usage": {"input": 400, "cached": 5200, "output": 80},
            "latency": 0.2,
        },
    ]


MODEL_SCRIPT: dict[str, Any] = {
    "rules": [
        {
            "name": "planner",
            "match": {"system": "baro's planner"},
            "turns": [
                {
                    "tool_calls": [
                        {"name": "list_files", "arguments": {}},
                        {"name": "view", "arguments": {"path": "inventory/core.py"}},
                    ],
                    "usage": {"input": 2400, "output": 120},
                    "latency": 0.3,
                },
                {
                    "tool_calls": [{"name": "grep", "arguments": {"pattern": "def test_"}}],
                    "usage": {"input": 900, "cached": 2400, "output": 60},
                    "latency": 0.2,
                },
                {
                    "tool_calls": [
                        {
                            "name": "submit_plan",
                            "arguments": {
                                "summary": "Add CSV export, a low-stock report and a CLI for "
                                "both; make remove() refuse to go below zero.",
                                "design_note": (
                                    "- `OutOfStock(Exception)` lives in inventory/core.py.\n"
                                    "- `inventory/export.py`: `to_csv(inv: Inventory) -> str`.\n"
                                    "- `inventory/report.py`: `low_stock(inv) -> list[Item]`, "
                                    "`format_report(items) -> str`.\n"
                                    "- `inventory/__main__.py`: argparse, subcommands `export` "
                                    "and `low-stock`, reading a JSON file given with --data."
                                ),
                                "stories": STORIES,
                            },
                        }
                    ],
                    "usage": {"input": 1500, "cached": 3300, "output": 1400},
                    "latency": 0.5,
                },
            ],
        },
        *(
            {
                "name": story["id"],
                "match": {"first_user": f"Implement story {story['id']}:"},
                "turns": story_turns(story),
            }
            for story in STORIES
        ),
        {
            "name": "reviewer",
            "match": {"system": "baro's reviewer"},
            "turns": [
                {
                    "tool_calls": [{"name": "view", "arguments": {"path": "inventory/report.py"}}],
                    "usage": {"input": 5200, "output": 80},
                    "latency": 0.3,
                },
                {
                    "tool_calls": [
                        {
                            "name": "submit_review",
                            "arguments": {
                                "summary": "The stories follow the design note; one note.",
                                "findings": [
                                    {
                                        "severity": "note",
                                        "file": "inventory/report.py",
                                        "line": 1,
                                        "problem": "format_report could say how many items "
                                        "are low in its first line.",
                                        "story": "S3",
                                    }
                                ],
                            },
                        }
                    ],
                    "usage": {"input": 900, "cached": 5200, "output": 260},
                    "latency": 0.4,
                },
            ],
        },
    ]
}


def _say(text: str) -> None:
    print(text, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """`wait_until`, ending the demo with a one-line reason instead of a traceback."""
    try:
        return wait_until(check, timeout, what)
    except TimedOut as exc:
        raise SystemExit(f"demo: {exc}") from None


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the demo's own, so the demo never touches anyone's data."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("demo: redis-server is not installed (scripts/install installs it)")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="baro-demo-redis-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        _wait(lambda: _pings(client), 10, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


RUNNERS = 3


@contextmanager
def bot_processes(env: dict[str, str], web_port: int, logs: Path) -> Iterator[None]:
    procs: list[subprocess.Popen[bytes]] = []
    kinds = [("web", "web", ["--port", str(web_port)]), ("worker", "worker", [])]
    kinds += [(f"runner-{i + 1}", "runner", []) for i in range(RUNNERS)]
    try:
        for name, kind, args in kinds:
            with (logs / f"{name}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "app.cli", kind, *args],
                        env=env,
                        cwd=ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


REAL_MODEL_VARS = ("BARO_MODELS", "BARO_ROUTING", "BARO_PRICES_FILE")


def _model_env(models_url: str | None) -> dict[str, str]:
    """The scripted models, or the operator's real ones when BARO_MODELS is set."""
    if models_url is None:
        return {k: os.environ[k] for k in REAL_MODEL_VARS if k in os.environ}
    return {
        "BARO_MODELS": json.dumps(
            [
                {
                    "name": name,
                    "protocol": "openai-chat",
                    "base_url": f"{models_url}/v1",
                    "model_id": model_id,
                    "api_key_env": "DEMO_MODEL_KEY",
                }
                for name, model_id in (
                    ("deepseek-pro", "deepseek-v4-pro"),
                    ("deepseek-flash", "deepseek-v4-flash"),
                )
            ]
        ),
        "BARO_ROUTING": json.dumps(
            {
                "planner": "deepseek-pro",
                "light": "deepseek-flash",
                "standard": "deepseek-flash",
                "heavy": "deepseek-pro",
            }
        ),
        "DEMO_MODEL_KEY": "sk-demo-not-a-real-key",
    }


class Progress:
    """Prints each story transition as it happens, read from the run record in Redis."""

    ICONS: ClassVar[dict[str, str]] = {
        "running": "⏳",
        "landed": "✅",
        "failed": "❌",
        "blocked": "⛔",
        "cancelled": "⏹",
    }

    def __init__(self, redis_url: str, started: float) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.started = started
        self.seen: dict[str, tuple[str, int]] = {}
        self.run_state = ""

    def poll(self, run_id: str) -> dict[str, Any] | None:
        raw = self.client.get(keys.run(run_id))
        if not isinstance(raw, bytes):
            return None
        run: dict[str, Any] = json.loads(raw)
        at = f"{time.monotonic() - self.started:6.1f}s"
        if run["state"] != self.run_state:
            self.run_state = run["state"]
            _say(f"{at}  run {run_id} is {run['state']}")
        for sid, record in sorted(run.get("stories", {}).items(), key=lambda kv: int(kv[0][1:])):
            key = (record["state"], record["attempts"])
            if self.seen.get(sid) == key or record["state"] == "pending":
                continue
            self.seen[sid] = key
            icon = self.ICONS.get(record["state"], "·")
            detail = ""
            if record["state"] == "landed":
                detail = f"commit {record['sha'][:7]} · {record.get('model') or ''}"
            elif record["state"] == "running":
                detail = f"attempt {record['attempts']}"
            elif record.get("failure"):
                detail = record["failure"][:100]
            _say(f"{at}  {icon} {sid} {record['state']:<9} {detail}")
        return run

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Scenario:
    """One demo repository: its files, the issue, the scripted models' conversations."""

    repo: str
    files: dict[str, str | bytes]
    title: str
    body: str
    script: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    """More settings for the bot's processes."""
    seed: Callable[[Path], None] | None = None
    """Prepares the runners' data directory before they start (a warm package cache)."""


PYTHON = Scenario("inventory", REPO_FILES, ISSUE_TITLE, ISSUE_BODY, MODEL_SCRIPT)


def run_demo(
    keep_logs: bool = False, json_path: Path | None = None, scenario: Scenario = PYTHON
) -> int:
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="baro-demo-logs-"))
    real_models = "BARO_MODELS" in os.environ
    models_cm = nullcontext(None) if real_models else running_model_server(scenario.script)
    with (
        private_redis() as redis_url,
        GitHubState() as state,
        running_testbed(state) as github,
        models_cm as models,
    ):
        app = state.create_app("baro-demo")
        installation = state.create_installation(app, "acme")
        repo = state.create_repo("acme", scenario.repo, scenario.files, installation=installation)
        state.set_permission(repo, "maintainer", "write")
        issue = state.create_issue(repo, scenario.title, scenario.body, "reporter")
        where = f"repository acme/{scenario.repo}, issue #{issue.number}"
        _say(f"testbed GitHub  {github.url}  ({where})")
        _say("models          " + ("from BARO_MODELS (real)" if models is None else models.url))

        runner_dir = Path(tempfile.mkdtemp(prefix="baro-demo-runner-", dir="/var/tmp"))
        if scenario.seed is not None:
            scenario.seed(runner_dir)
        key_file = logs / "app.pem"
        key_file.write_text(app.private_key_pem)
        key_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BARO_")}
        env.update(
            {
                "BARO_GITHUB_APP_ID": str(app.id),
                "BARO_GITHUB_PRIVATE_KEY_FILE": str(key_file),
                "BARO_GITHUB_WEBHOOK_SECRET": app.webhook_secret,
                "BARO_GITHUB_APP_SLUG": app.slug,
                "BARO_GITHUB_API_URL": github.url,
                "BARO_REDIS_URL": redis_url,
                "BARO_GITHUB_WRITE_SPACING": "0.2",
                "BARO_RUNNER_DATA_DIR": str(runner_dir),
                # Readable logs for --keep-logs; production defaults to JSON.
                "BARO_LOG_FORMAT": os.environ.get("BARO_LOG_FORMAT", "text"),
                **_model_env(None if models is None else models.url),
                **scenario.env,
            }
        )
        web_port = _free_port()
        web_url = f"http://127.0.0.1:{web_port}"
        progress = Progress(redis_url, started)
        try:
            with bot_processes(env, web_port, logs):
                _wait(lambda: _healthy(web_url), 30, "baro-bot web")
                _say(f"baro-bot web    {web_url}  + worker + {RUNNERS} runners\n")
                summary = _drive(state, repo, issue, app, installation.id, web_url, progress)
        finally:
            progress.close()
    kept = f"; logs kept in {logs}" if keep_logs else ""
    _say(f"\ndemo finished in {time.monotonic() - started:.1f}s{kept}")
    shutil.rmtree(runner_dir, ignore_errors=True)
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        _say(f"summary written to {json_path}")
    if not keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return 0 if summary["state"] == "done" else 1


def _drive(
    state: GitHubState,
    repo: Any,
    issue: Any,
    app: Any,
    installation_id: int,
    web_url: str,
    progress: Progress,
) -> dict[str, Any]:
    """Label the issue, follow the run to its PR, print what a maintainer sees."""
    payload = issue_labeled_payload(
        state, repo, issue.number, "baro", "maintainer", installation_id
    )
    _say("→ @maintainer adds the label `baro`; GitHub delivers a signed webhook")
    sent = time.monotonic()
    resp = asyncio.run(_deliver(web_url, payload, app.webhook_secret))
    _say(f"← {resp.status_code} {resp.text}  ({(time.monotonic() - sent) * 1000:.0f} ms)")

    def tracking() -> Any:
        for comment in state.comments(repo, issue.number):
            if comment.user.login == app.bot.login and "baro:run:" in comment.body:
                return comment
        return None

    first = _wait(tracking, 30, "the tracking comment")
    _say(f"\ntracking comment #{first.id} after {time.monotonic() - sent:.2f}s\n")
    _say(_indent(first.body))
    run_id = first.body.split("<!-- baro:run:", 1)[1].split(" -->", 1)[0]

    planned = _wait(
        lambda: (c := tracking()) is not None and "```mermaid" in c.body and c, 300, "the plan"
    )
    _say(f"\n… planned after {time.monotonic() - sent:.2f}s; the comment now reads:\n")
    _say(_indent(planned.body))
    _say("\nprogress:")

    def finished() -> dict[str, Any] | None:
        run = progress.poll(run_id)
        if run is None or run["state"] not in ("done", "checkpoint", "failed", "cancelled"):
            return None
        comment = tracking()
        if comment is None or "<!-- baro:run:" not in comment.body:
            return None
        # the final state label comes after the PR (its writes are spaced)
        labels = set(state.labels(repo, issue.number))
        if run["state"] in ("done", "checkpoint", "failed") and not labels & FINAL_LABELS:
            return None
        return None if "baro:running" in labels else run

    run = _wait(finished, 900, "the run to finish")
    headline = {
        "done": "Done —",
        "checkpoint": "Checkpoint —",
        "failed": "Failed —",
        "cancelled": "Cancelled —",
    }[run["state"]]
    final = _wait(
        lambda: (c := tracking()) is not None and headline in c.body and c,
        30,
        "the final comment",
    )
    _say(f"\n… run {run['state']} after {time.monotonic() - sent:.1f}s; the comment:\n")
    _say(_indent(final.body))
    pulls = state.pulls(repo)
    summary: dict[str, Any] = {
        "run": run_id,
        "state": run["state"],
        "pr": None,
        "stories": {
            sid: {
                "state": r["state"],
                "commit": r.get("sha"),
                "model": r.get("model"),
                "attempts": r["attempts"],
                "cost_usd": r.get("cost_usd"),
            }
            for sid, r in run["stories"].items()
        },
        "planner_cost_usd": (run.get("plan_stats") or {}).get("cost_usd"),
        "seconds": round(time.monotonic() - sent, 1),
        "github_writes": github_writes(state),
    }
    if pulls:
        pull = pulls[0]
        summary["pr"] = {"number": pull.number, "title": pull.issue.title, "draft": pull.draft}
        _say(f"\nPR #{pull.number}: {pull.issue.title}  ({pull.head_ref} → {pull.base_ref})")
        _say(f"review requested from: {[u.login for u in pull.requested_reviewers]}\n")
        _say(_indent(pull.issue.body or ""))
        for review in state.reviews(repo, pull.number):
            _say(f"\nreview by {review.user.login}: {review.body}")
            for comment in review.comments:
                _say(f"    {comment.path}:{comment.line}  {comment.body}")
        _say("\ncommits on the run branch:")
        _say(_indent(_git_log(repo.git_dir, pull.head_ref)))
    _say(f"labels on the issue: {state.labels(repo, issue.number)}")
    return summary


def github_writes(state: GitHubState, repo: str | None = None) -> dict[str, int]:
    """REST writes the bot sent (to `repo` only, when given), by kind (`POST
    issues/comments` …); git pushes and token mints are not REST writes a maintainer sees."""
    counts: dict[str, int] = {}
    for record in state.request_log():
        if repo is not None and not record.path.startswith(f"/repos/{repo}/"):
            continue
        if record.method == "GET" or record.path.endswith(
            (".git/git-receive-pack", "/access_tokens")
        ):
            continue
        if ".git/" in record.path or record.path == "/graphql":
            continue
        kind = re.sub(r"/repos/[^/]+/[^/]+", "", record.path)
        kind = re.sub(r"/\d+", "/N", kind)
        key = f"{record.method} {kind}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


async def _deliver(url: str, payload: Any, secret: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await deliver(client, url + "/webhooks/github", "issues", payload, secret)


def _git_log(git_dir: Path, branch: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), "log", "--format=%h %s", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--json", type=Path, default=None, help="write a summary to this file")
    parser.add_argument(
        "--typescript",
        action="store_true",
        help="a TypeScript service with Jest and a type-check, `npm ci` as setup",
    )
    parser.add_argument(
        "--npm-cache",
        type=Path,
        default=None,
        help="with --typescript: an npm cache (e.g. ~/.npm) to start the runners' cache from",
    )
    args = parser.parse_args()
    scenario = PYTHON
    if args.typescript:
        from testbed.demo_typescript import typescript_scenario

        scenario = typescript_scenario(args.npm_cache)
    sys.exit(run_demo(keep_logs=args.keep_logs, json_path=args.json, scenario=scenario))


if __name__ == "__main__":
    main()

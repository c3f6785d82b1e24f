"""The demo's TypeScript scenario (`scripts/demo --typescript`): a small stock service with
Jest and a type-check, `npm ci` as its `setup:` (280 packages from the npm registry, the only
command of the run with the network), six stories with real dependencies between them.

The scripted model writes the files of `demo_ts/after`; every story's test and `verify:`
(`tsc --noEmit`, `jest`) really run in the sandbox against the `node_modules` setup made
once for the run. `npm_cache` seeds the runner's package cache for the repository (the
e2e test passes the machine's npm cache, so `npm ci` needs no download).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from testbed.demo import Scenario, _tree, story_turns

DEMO_TS = Path(__file__).resolve().parent / "demo_ts"
BEFORE: dict[str, str | bytes] = dict(_tree(DEMO_TS / "before"))
AFTER = _tree(DEMO_TS / "after")
REPO = "stock-service"
TITLE = "Stock service: CSV export, low-stock report and an HTTP handler"
BODY = (
    "Removing more than is in stock must fail with OutOfStock instead of going negative. "
    "Add a CSV export and a low-stock report, and a request handler serving both "
    "(`GET /export.csv`, `GET /low-stock`, `POST /remove` answering 409 when out of stock)."
)


def _story(
    sid: str, title: str, writes: list[str], test: str, deps: list[str], tier: str = "light"
) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title,
        "description": f"{title}: {', '.join(writes)}.",
        "depends_on": deps,
        "writes": writes,
        "acceptance": [f"`{test}` passes"],
        "tests": [test],
        "tier": tier,
    }


STORIES = [
    _story(
        "S1",
        "Refuse to remove more than is in stock",
        ["src/inventory.ts", "tests/inventory.test.ts"],
        "npx jest tests/inventory.test.ts",
        [],
    ),
    _story(
        "S2",
        "CSV export",
        ["src/export.ts", "tests/export.test.ts"],
        "npx jest tests/export.test.ts",
        [],
        "standard",
    ),
    _story(
        "S3",
        "Low-stock report",
        ["src/report.ts", "tests/report.test.ts"],
        "npx jest tests/report.test.ts",
        [],
        "standard",
    ),
    _story(
        "S4",
        "Request handler",
        ["src/service.ts"],
        "npx tsc --noEmit",
        ["S1", "S2", "S3"],
        "standard",
    ),
    _story(
        "S5", "Handler tests", ["tests/service.test.ts"], "npx jest tests/service.test.ts", ["S4"]
    ),
    _story("S6", "Document the endpoints", ["README.md"], "grep -q low-stock README.md", ["S4"]),
]


def script() -> dict[str, Any]:
    plan = {
        "summary": "OutOfStock in the inventory, a CSV export, a low-stock report, and a "
        "request handler serving them, each with Jest tests.",
        "design_note": (
            "- `OutOfStock extends Error` in src/inventory.ts.\n"
            "- src/export.ts: `toCsv(inv)`; src/report.ts: `lowStock(inv)`, `formatReport`.\n"
            "- src/service.ts: `handle(inv, req)` → `{status, type, body}`."
        ),
        "stories": STORIES,
    }
    return {
        "rules": [
            {
                "name": "planner",
                "match": {"system": "baro's planner"},
                "turns": [
                    {
                        "tool_calls": [
                            {"name": "list_files", "arguments": {}},
                            {"name": "view", "arguments": {"path": "src/inventory.ts"}},
                        ],
                        "usage": {"input": 2400, "output": 120},
                    },
                    {
                        "tool_calls": [{"name": "submit_plan", "arguments": plan}],
                        "usage": {"input": 1500, "cached": 2400, "output": 1400},
                    },
                ],
            },
            *(
                {
                    "name": story["id"],
                    "match": {"first_user": f"Implement story {story['id']}:"},
                    "turns": story_turns(story, BEFORE, AFTER, "src"),
                }
                for story in STORIES
            ),
            {
                "name": "reviewer",
                "match": {"system": "baro's reviewer"},
                "turns": [
                    {
                        "tool_calls": [
                            {
                                "name": "submit_review",
                                "arguments": {"summary": "Matches the plan.", "findings": []},
                            }
                        ],
                        "usage": {"input": 5200, "output": 60},
                    }
                ],
            },
        ]
    }


def typescript_scenario(npm_cache: Path | None = None) -> Scenario:
    return Scenario(REPO, BEFORE, TITLE, BODY, script(), seed=_seeder(npm_cache))


def _seeder(npm_cache: Path | None) -> Any:
    if npm_cache is None or not (npm_cache / "_cacache").is_dir():
        return None

    def seed(runner_dir: Path) -> None:
        """The machine's npm cache as the repository's cache on the runner (as a second run
        of the repository would find it)."""
        target = runner_dir / "caches" / "acme" / REPO / "npm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(npm_cache / "_cacache", target / "_cacache", symlinks=True)

    return seed


__all__ = ["STORIES", "typescript_scenario"]

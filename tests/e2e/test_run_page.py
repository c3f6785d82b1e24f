"""The run page in a real browser (Debian's headless Chromium driven by Playwright), against
real bot processes and the testbed: a finished run's DAG, timeline and replay; a running
run's live updates; hostile titles shown as text; no valid token, no page.

All browser tests live in this module (one browser for all of them). With
`RUN_PAGE_SCREENSHOT=<path>` set, the finished run's page is also saved there as a PNG (the
README's screenshot is made this way).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import shutil
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from app.run_links import DERIVATION_LABEL, RunLinks
from testbed.models.harness import RunningModelServer
from testbed.waiting import wait_until
from tests.app.web.test_run_page import store_run
from tests.e2e.harness import Bot, World, tracking, wait_run
from tests.e2e.scenario import Scenario, always_wrong, create, finish, story, tag
from tests.e2e.test_check_run import linked_bot

__all__ = ["linked_bot"]  # web, worker and two runners with a public URL (test_check_run.py)

T = TypeVar("T")
CHROMIUM = Path(os.environ.get("RUN_PAGE_BROWSER") or "/usr/bin/chromium")
"""Debian's chromium (scripts/install); RUN_PAGE_BROWSER names another Chromium-based one."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = '<img src=x onerror=window.pwned=1><script>window.pwned=2</script> & "q"'
LINK = re.compile(r"\((http://127\.0\.0\.1:\d+/runs/[^)\s]+)\)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is not installed; run scripts/install")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Await `work` on a loop of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, browser: Browser) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def close(self) -> None:
        self.context.close()


def page_link(world: World, repo: Any, number: int) -> str:
    comment = wait_until(
        lambda: (c := tracking(world, repo, number)) and LINK.search(c.body) and c,
        30,
        "the run page link in the tracking comment",
    )
    found = LINK.search(comment.body)
    assert found is not None
    return found.group(1)


def six_stories() -> dict[str, Any]:
    """Level 0 lays the foundation, level 1 fans out, S1 → S3 → S5 → S6 is the long chain."""
    return {
        "summary": "An inventory tool grows an export, a low-stock report and a CLI.",
        "design_note": "Small text files stand in for the modules.",
        "stories": [
            story("S1", "Foundation", [], "core.txt", "grep -q core core.txt"),
            story("S2", "CSV export", ["S1"], "export.txt", "grep -q csv export.txt"),
            story("S3", "Low-stock report", ["S1"], "report.txt", "grep -q low report.txt"),
            story("S4", "Refuse over-removal", ["S1"], "guard.txt", "grep -q no guard.txt"),
            story("S5", "Command line", ["S2", "S3"], "cli.txt", "grep -q cli cli.txt"),
            story("S6", "Document the CLI", ["S5"], "docs.txt", "grep -q docs docs.txt"),
        ],
    }


def script_six(s: Scenario) -> None:
    """S3 fails its first attempt (its test stays red) and lands on the retry."""
    retry = {
        "name": "S3 retry",
        "match": {"first_user": "Implement story S3: Low-stock report.*A previous attempt"},
        "turns": [create("report.txt", "low\n", 0.8), finish()],
    }
    s.plans(six_stories())
    s.agent("S1", "Foundation", [create("core.txt", "core\n", 1.2), finish()])
    s.agent("S2", "CSV export", [create("export.txt", "csv\n", 0.6), finish()]).rule(retry)
    s.agent("S3", "Low-stock report", always_wrong("report.txt"))
    s.agent("S4", "Refuse over-removal", [create("guard.txt", "no\n"), finish()])
    s.agent("S5", "Command line", [create("cli.txt", "cli\n", 1.0), finish()])
    s.agent("S6", "Document the CLI", [create("docs.txt", "docs\n"), finish()]).script()


def classes(page: Page, sid: str) -> str:
    return page.locator(f'#dag [data-story="{sid}"]').get_attribute("class") or ""


def test_a_finished_run_shows_its_dag_timeline_and_replays(
    world: World, linked_bot: Bot, models: RunningModelServer, browser: Browser, tmp_path: Path
) -> None:
    s = Scenario.new(world, models, "Inventory tooling: an export, a low-stock report and a CLI")
    script_six(s)
    repo, issue = s.repo, s.issue
    in_thread(s.label(linked_bot))
    state = wait_run(world, linked_bot, repo, issue.number, timeout=150)
    assert state["state"] == "done", state["failure"]
    url = page_link(world, repo, issue.number)

    watched = Watched(browser)
    page = watched.page
    try:
        response = page.goto(url)
        assert response is not None and response.status == 200
        page.wait_for_selector("#timeline rect.bar[data-story]")
        view = httpx.get(re.sub(r"(/runs/[^?]+)\?", r"\1.json?", url), timeout=10).json()
        assert [s["id"] for s in view["stories"]] == ["S1", "S2", "S3", "S4", "S5", "S6"]
        assert page.locator("#dag .node").count() == 6
        assert page.locator("#dag .node.state-landed").count() == 6
        assert page.locator("#dag .edge").count() == 6
        critical = page.eval_on_selector_all(
            "#dag .node.critical", "nodes => nodes.map(n => n.dataset.story)"
        )
        assert critical == view["critical_path"] and critical[0] == "S1"
        assert critical[-1] == "S6"
        # Every attempt, the failed one too, on the timeline and in the table.
        assert len(view["attempts"]) == 7
        assert page.locator("#timeline rect.bar[data-story]").count() == 7
        rows = page.locator("#attempts tbody tr")
        assert rows.count() == 7
        failed = page.locator("#attempts tbody tr", has_text="verification")
        assert failed.count() == 1 and "failed" in failed.inner_text()
        s3 = [a for a in view["attempts"] if a["story"] == "S3"]
        assert [a["outcome"] for a in s3] == ["failed", "landed"]
        assert all(a["model"] and a["tier"] and a["tokens"] > 0 for a in view["attempts"])
        assert "● live" not in page.inner_text("#live")

        shot = tmp_path / "run-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("RUN_PAGE_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["RUN_PAGE_SCREENSHOT"])

        # Back to the start: only the foundation can have begun; then replay to the end.
        page.locator("#scrub").fill("0")
        page.wait_for_function("() => document.body.dataset.cursor === '0.00'")
        assert "state-landed" not in classes(page, "S6")
        assert page.locator("#timeline rect.bar[data-story]").count() <= 1
        page.select_option("#speed", "10")
        page.click("#play")
        page.wait_for_function("() => parseFloat(document.body.dataset.cursor) > 0")
        first = float(page.evaluate("document.body.dataset.cursor"))
        page.wait_for_function(
            f"() => document.body.dataset.cursor === 'live' || "
            f"parseFloat(document.body.dataset.cursor) > {first}"
        )
        page.wait_for_function("() => document.body.dataset.cursor === 'live'", timeout=60_000)
        assert "state-landed" in classes(page, "S6")
        assert page.locator("#timeline rect.bar[data-story]").count() == 7
        assert watched.errors == []
    finally:
        watched.close()


def test_a_running_run_updates_live_and_shows_hostile_titles_as_text(
    world: World, linked_bot: Bot, models: RunningModelServer, browser: Browser
) -> None:
    t = tag()
    title = f"Live {t}"
    plan = {
        "summary": f"Two steps ({t}) <b>bold?</b>",
        "design_note": "Text files.",
        "stories": [
            story("S1", HOSTILE, [], "one.txt", "grep -q one one.txt"),
            story("S2", f"Second {t}", ["S1"], "two.txt", "grep -q two two.txt"),
        ],
    }
    s = Scenario.new(world, models, title).plans(plan)
    s.agent("S1", "", [create("one.txt", "one\n", 4), finish()])
    s.agent("S2", f"Second {t}", [create("two.txt", "two\n", 2), finish()]).script()
    repo, issue = s.repo, s.issue
    in_thread(s.label(linked_bot))
    wait_run(
        world,
        linked_bot,
        repo,
        issue.number,
        check=lambda r: r["stories"].get("S1", {}).get("state") == "running",
        what="S1 to run",
    )
    url = page_link(world, repo, issue.number)
    watched = Watched(browser)
    page = watched.page
    try:
        assert page.goto(url) is not None
        page.wait_for_selector("#timeline rect.bar")
        assert "● live" in page.inner_text("#live")
        assert "state-landed" not in classes(page, "S2")
        # The title is text everywhere: in the graph, on the timeline, never markup.
        stored = page.locator('#dag [data-story="S1"] title').text_content()
        assert stored is not None and stored.startswith("S1: <img src=x")
        assert page.evaluate("window.pwned") is None
        assert page.locator("img").count() == 0 and page.locator("b").count() == 0
        label = page.locator("#timeline .rowlabel").first.text_content()
        assert label is not None and label.startswith("S1 <img src=x")
        # Live: the page follows the run to its end without a reload.
        page.wait_for_function(
            "() => document.querySelector('#dag [data-story=\"S2\"]')"
            ".classList.contains('state-landed')",
            timeout=90_000,
        )
        page.wait_for_function("() => document.body.dataset.state === 'done'", timeout=60_000)
        assert page.inner_text("#live") == ""
        assert page.evaluate("window.pwned") is None
        assert watched.errors == []
    finally:
        watched.close()


def test_no_valid_token_no_page(world: World, linked_bot: Bot, browser: Browser) -> None:
    run_id = f"r{tag()}00000"
    in_thread(store_run(linked_bot.env["BARO_REDIS_URL"], run_id))
    key = hmac.new(world.app.private_key_pem.encode(), DERIVATION_LABEL, hashlib.sha256).digest()
    links = RunLinks(key, linked_bot.web_url, 90)
    good = links.token(run_id, int((datetime.now(UTC) + timedelta(days=1)).timestamp()))
    expired = links.token(run_id, int((datetime.now(UTC) - timedelta(seconds=5)).timestamp()))
    other = RunLinks(b"another server" * 3, None, 90).token(run_id, int(good.split(".")[0]))
    base = f"{linked_bot.web_url}/runs/{run_id}"
    watched = Watched(browser)
    try:
        ok = watched.page.goto(f"{base}?token={good}")
        assert ok is not None and ok.status == 200  # the web process derives the same key
        for url in (
            base,
            f"{base}?token=",
            f"{base}?token={expired}",
            f"{base}?token={other}",
            f"{base}?token={good[:-3]}abc",
            f"{base}.json?token={expired}",
            f"{linked_bot.web_url}/runs/r99999999999?token={good}",
        ):
            response = watched.page.goto(url)
            assert response is not None and response.status == 404, url
            assert watched.page.inner_text("body") == "Not Found"
    finally:
        watched.close()

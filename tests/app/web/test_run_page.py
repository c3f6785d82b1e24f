"""`/runs/<id>` and `/runs/<id>.json` on the real web app under uvicorn, with a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from redis.asyncio import Redis

from app.core.run import now
from app.run_links import RunLinks
from app.store import RunStore
from app.web.run_page import CSP
from tests.app.core.test_timeline import EVENTS, HOSTILE, make_run, record
from tests.app.web.test_metrics_page import serving, settings_for


async def store_run(redis_url: str, run_id: str) -> None:
    redis = Redis.from_url(redis_url)
    store = RunStore(redis)
    run = make_run("running", S1=record("landed", 1), S2=record("running", 2))
    run = run.model_copy(update={"id": run_id, "created_at": now()})
    await store.create(run)
    for event in EVENTS:
        data = {k: v for k, v in event.items() if k not in ("kind", "at")}
        await store.append_event(run_id, event["kind"], **data)
    await redis.aclose()


@pytest.fixture
def site(pem: str, redis_url: str) -> Iterator[tuple[str, RunLinks]]:
    settings = settings_for(pem, redis_url, public_url="https://baro.example")
    asyncio.run(store_run(redis_url, "r00000000abc"))
    with serving(settings) as url:
        yield url, RunLinks.from_settings(settings)


def test_the_page_and_its_data_need_a_valid_token(site: tuple[str, RunLinks]) -> None:
    url, links = site
    run = "r00000000abc"
    path = links.path(run, now())
    page = httpx.get(url + path, timeout=10)
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["content-type"].startswith("text/html")
    assert "<script>window.pwned" not in page.text and HOSTILE not in page.text
    data = httpx.get(url + links.path(run, now(), ".json"), timeout=10)
    assert data.status_code == 200
    view = data.json()
    assert view["id"] == run and view["stories"][1]["title"] == HOSTILE
    assert data.headers["content-security-policy"] == CSP
    token = path.split("token=", 1)[1]
    expired = links.token(run, int((now() - timedelta(seconds=1)).timestamp()))
    for bad in (
        f"/runs/{run}",
        f"/runs/{run}?token=",
        f"/runs/{run}?token={token[:-2]}xx",
        f"/runs/{run}?token={expired}",
        f"/runs/r00000000abd?token={token}",
        f"/runs/{run}.json?token={expired}",
        f"/runs/{run}.json",
    ):
        refused = httpx.get(url + bad, timeout=10)
        assert (refused.status_code, refused.text) == (404, "Not Found"), bad
        assert refused.headers["content-security-policy"] == CSP
    missing = links.path("r00000000abd", now())  # a valid link to a run that is not there
    assert httpx.get(url + missing, timeout=10).status_code == 404


def test_the_script_and_stylesheet_come_from_the_web_process(site: tuple[str, RunLinks]) -> None:
    url, _ = site
    script = httpx.get(url + "/static/run-page.js", timeout=10)
    style = httpx.get(url + "/static/run-page.css", timeout=10)
    assert script.status_code == style.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    assert "innerHTML" not in script.text and "eval(" not in script.text

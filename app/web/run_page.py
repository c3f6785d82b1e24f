"""`GET /runs/<id>` (the run page) and `GET /runs/<id>.json` (its data), behind signed links.

Both need the `token` of the link the worker wrote into the tracking comment, the PR body and
the check run (`app.run_links`): a missing, wrong or expired token, or an unknown run, is the
same bare 404, so the answer tells nothing about which runs exist. Every answer carries a
strict Content-Security-Policy (the page loads its script and stylesheet from this process and
nothing else) and no Referer leaves the page, so the token cannot leak through a link.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.core.run import Run, now
from app.core.run_page import render_run_page
from app.core.run_view import run_view
from app.run_links import RunLinks
from app.store import RunStore
from app.web.state import web_state

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
STATIC_DIR = Path(__file__).resolve().parent / "static"
SCRIPT_PATH = "/static/run-page.js"
STYLE_PATH = "/static/run-page.css"
_STATIC = {
    SCRIPT_PATH: ("run-page.js", "text/javascript"),
    STYLE_PATH: ("run-page.css", "text/css"),
}


def not_found() -> Response:
    return Response("Not Found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)


@dataclass(frozen=True)
class RunPages:
    links: RunLinks
    static: dict[str, tuple[bytes, str]]

    @classmethod
    def create(cls, links: RunLinks) -> RunPages:
        """Read the script and the stylesheet once (when the app is made, not on import)."""
        files = {
            path: ((STATIC_DIR / name).read_bytes(), kind) for path, (name, kind) in _STATIC.items()
        }
        return cls(links, files)

    def routes(self) -> list[Route]:
        # The .json route first: `{run_id}` alone would match "r1.json" too.
        return [
            Route("/runs/{run_id}.json", self.data, methods=["GET"]),
            Route("/runs/{run_id}", self.page, methods=["GET"]),
            *(Route(path, self.asset, methods=["GET"]) for path in self.static),
        ]

    async def _load(self, request: Request) -> tuple[Run, list[dict[str, object]]] | Response:
        run_id = request.path_params["run_id"]
        if not self.links.valid(run_id, request.query_params.get("token"), now()):
            return not_found()
        store = RunStore(web_state(request).redis, web_state(request).metrics)
        try:
            run = await store.find(run_id)
            if run is None:
                return not_found()
            events = await store.events(run_id)
        except (RedisError, OSError) as exc:
            log.error("run page: redis unavailable (%s)", type(exc).__name__)
            return Response(
                "Service Unavailable", 503, media_type="text/plain", headers=SECURITY_HEADERS
            )
        return run, events

    async def data(self, request: Request) -> Response:
        loaded = await self._load(request)
        if isinstance(loaded, Response):
            return loaded
        run, events = loaded
        view = run_view(run, events, now=now())
        body = json.dumps(view, ensure_ascii=False, separators=(",", ":"))
        return Response(body, media_type="application/json", headers=SECURITY_HEADERS)

    async def page(self, request: Request) -> Response:
        loaded = await self._load(request)
        if isinstance(loaded, Response):
            return loaded
        run, events = loaded
        token = request.query_params["token"]
        html = render_run_page(
            run_view(run, events, now=now()),
            json_url=f"/runs/{quote(run.id)}.json?token={quote(token)}",
            script_url=SCRIPT_PATH,
            style_url=STYLE_PATH,
        )
        return Response(html, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def asset(self, request: Request) -> Response:
        body, kind = self.static[request.url.path]
        headers = {**SECURITY_HEADERS, "cache-control": "public, max-age=300"}
        return Response(body, media_type=kind, headers=headers)

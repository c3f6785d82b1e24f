"""Register the GitHub App with GitHub's manifest flow: `GET /setup` and `/setup/callback`.

The App does not exist yet when this runs, so nothing here needs App credentials or Redis:
`baro-bot setup` serves these pages alone (an operator's laptop), and the configured web
process serves them too. `/setup` posts a manifest to GitHub; GitHub creates the App and
sends the browser back with a one-time code, which the callback exchanges for the App's id,
slug, private key and webhook secret. Those are rendered once, as a `fly secrets set` line,
and never logged.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
import secrets
import shlex
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from app.logs import RedactingFilter, Redactor
from app.settings import ENV_PREFIX, ConfigError, Settings, public_base_url

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_WEB_URL = "https://github.com"
WEBHOOK_PATH = "/webhooks/github"
EVENTS = ("issues", "issue_comment", "pull_request_review", "pull_request_review_comment")
PERMISSIONS = {
    "metadata": "read",
    "issues": "write",
    "pull_requests": "write",
    "contents": "write",
    "checks": "write",
}
"""What the bot needs (`checks`: the run's check run on its branch); not `workflows`, so it
can never push a CI workflow."""
DESCRIPTION = "Turns a GitHub issue into a pull request."
STATE_COOKIE = "baro_setup_state"
STATE_MAX_AGE = 3600
"""GitHub's manifest code lives an hour; the browser's proof of starting the flow as long."""
MAX_NAME_LENGTH = 34  # GitHub's limit for an App's name
EXCHANGE_TIMEOUT = 30.0

_ORG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""The code goes into the API path: nothing that could walk to another endpoint."""
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # No scripts at all; `form-action` stays open: the form posts to GitHub, which
    # redirects back here, and browsers check that redirect against form-action too.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
}


class SetupSettings(BaseSettings):
    """What registration needs: where GitHub is and where it should deliver. No App
    credentials, no Redis: the App is being created."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        populate_by_name=True,
    )

    github_api_url: str = DEFAULT_API_URL
    github_web_url: str = DEFAULT_WEB_URL
    public_url: str | None = None
    """The public base URL GitHub delivers webhooks to, e.g. https://baro-bot.fly.dev."""
    app_name: str = Field(default="baro-bot", min_length=1, max_length=MAX_NAME_LENGTH)
    fly_app: str | None = Field(
        default=None, validation_alias=AliasChoices("BARO_FLY_APP", "FLY_APP_NAME", "fly_app")
    )
    """For `fly secrets set -a NAME`; on a Fly machine FLY_APP_NAME supplies it."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, lt=65536)

    @field_validator("github_api_url", "github_web_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return public_base_url(value) if value else None

    @classmethod
    def from_settings(cls, settings: Settings) -> SetupSettings:
        """The web process's view: the shared values from its Settings, the rest from env."""
        return cls(
            github_api_url=settings.github_api_url,
            github_web_url=settings.github_web_url,
            public_url=settings.public_url or None,
        )


def load_setup_settings(**overrides: Any) -> SetupSettings:
    """Like `load_settings`: one line naming the variable, never its value."""
    try:
        return SetupSettings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error.get("loc", ())]
        name = ENV_PREFIX + loc[0].upper() if loc else "setting"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}") from None


# --- the manifest ---------------------------------------------------------------------------


def manifest(*, name: str, public_url: str, redirect_url: str) -> dict[str, Any]:
    """The App as GitHub's manifest flow describes it (private, the bot's events and
    permissions, webhooks to `public_url`)."""
    return {
        "name": name,
        "url": public_url,
        "description": DESCRIPTION,
        "hook_attributes": {"url": f"{public_url}{WEBHOOK_PATH}", "active": True},
        "redirect_url": redirect_url,
        "public": False,
        "default_events": list(EVENTS),
        "default_permissions": dict(PERMISSIONS),
    }


def new_app_url(web_url: str, state: str, org: str | None = None) -> str:
    """Where the manifest form posts: the user's or the organization's "new App" page."""
    owner = f"/organizations/{quote(org, safe='')}" if org else ""
    return f"{web_url}{owner}/settings/apps/new?{urlencode({'state': state})}"


# --- the exchange ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredApp:
    """What GitHub hands over once for a new App; the secrets stay out of `repr`."""

    id: int
    slug: str
    name: str
    html_url: str
    webhook_secret: str | None = field(repr=False)
    pem: str = field(repr=False)


class CodeRejected(Exception):
    """GitHub does not know the code (used already, or older than an hour)."""


class GitHubUnavailable(Exception):
    """GitHub could not be reached or answered something unusable; the message is safe."""


async def exchange_code(api_url: str, code: str) -> RegisteredApp:
    """`POST /app-manifests/{code}/conversions`, unauthenticated and never retried (the code
    is single use). Errors carry no response text: the answer holds the App's secrets."""
    from githubkit import GitHub
    from githubkit.exception import RequestError, RequestFailed

    async with GitHub(
        base_url=api_url,
        auto_retry=False,
        http_cache=False,
        timeout=EXCHANGE_TIMEOUT,
        user_agent="baro-bot-setup",
    ) as gh:
        try:
            response = await gh.rest.apps.async_create_from_manifest(code)
        except RequestFailed as exc:
            status = exc.response.status_code
            if status in (404, 422):
                raise CodeRejected from None
            raise GitHubUnavailable(f"GitHub answered HTTP {status}") from None
        except RequestError as exc:
            raise GitHubUnavailable(f"GitHub could not be reached ({type(exc).__name__})") from None
        try:
            data = response.parsed_data
            slug = data.slug if isinstance(data.slug, str) else ""
            return RegisteredApp(
                id=data.id,
                slug=slug,
                name=data.name,
                html_url=data.html_url,
                webhook_secret=data.webhook_secret,
                pem=data.pem,
            )
        except ValueError:  # pydantic's error would quote the secrets it failed on
            raise GitHubUnavailable("GitHub's answer was not an App") from None


def one_line_pem(pem: str) -> str:
    """The PEM with literal `\\n` for newlines: one shell word that `Settings` reads back."""
    return pem.replace("\r\n", "\n").replace("\n", "\\n")


def secrets_command(
    app: RegisteredApp, *, fly_app: str | None = None, api_url: str = DEFAULT_API_URL
) -> str:
    """The exact `fly secrets set` line; every value shell-quoted. The API URL is included
    only when it is not api.github.com (GitHub Enterprise), where the bot needs it too."""
    values = {
        "BARO_GITHUB_APP_ID": str(app.id),
        "BARO_GITHUB_APP_SLUG": app.slug,
    }
    if app.webhook_secret is not None:
        values["BARO_GITHUB_WEBHOOK_SECRET"] = app.webhook_secret
    values["BARO_GITHUB_PRIVATE_KEY"] = one_line_pem(app.pem)
    if api_url.rstrip("/") != DEFAULT_API_URL:
        values["BARO_GITHUB_API_URL"] = api_url
    words = ["fly", "secrets", "set"]
    if fly_app:
        words += ["-a", shlex.quote(fly_app)]
    words += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return " ".join(words)


# --- pages ----------------------------------------------------------------------------------

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}"
    "pre{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:1rem}"
    "code{background:#f4f4f4}.warn{border-left:4px solid #c60;padding-left:1rem}"
    "button{font-size:1rem;padding:.5rem 1rem}label{display:block;margin:.5rem 0}"
    "input[type=text],input[type=url]{width:100%}"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _href(url: str) -> str:
    """Only http(s) links: a URL from elsewhere must not become `javascript:`."""
    return _e(url) if urlsplit(url).scheme in ("http", "https") else "#"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_e(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status, headers=_HEADERS)


def _external_url(request: Request, route: str, public_url: str | None) -> str:
    """An absolute URL of this server as the browser sees it. Behind a TLS-terminating
    proxy (Fly) the request looks like http://: the public URL's scheme wins for its host."""
    url = str(request.url_for(route))
    if public_url:
        public, ours = urlsplit(public_url), urlsplit(url)
        if public.netloc.lower() == ours.netloc.lower() and public.scheme != ours.scheme:
            url = ours._replace(scheme=public.scheme).geturl()
    return url


def _hide_codes_in_http_logs() -> None:
    """httpx logs every request's URL, and an unspent manifest code (the exchange failed) is
    as good as the App's private key for an hour: the shared redaction runs on httpx's
    logger itself, so it applies even where logging was never configured (`baro-bot setup`)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter(Redactor()))


class SetupPages:
    """The two pages, bound to their settings (bound methods: Starlette request endpoints)."""

    def __init__(self, settings: SetupSettings) -> None:
        self.settings = settings
        _hide_codes_in_http_logs()

    def routes(self) -> list[Route]:
        return [
            Route("/setup", self.start, methods=["GET"], name="setup"),
            Route("/setup/callback", self.callback, methods=["GET"], name="setup_callback"),
        ]

    async def start(self, request: Request) -> Response:
        """The form that posts the manifest to GitHub, and a GET form to change its inputs."""
        query = request.query_params
        name = (query.get("name") or self.settings.app_name).strip()
        org = query.get("org", "").strip()
        raw_public = query.get("public_url", "").strip() or self.settings.public_url or ""
        problems: list[str] = []  # HTML
        public_url: str | None = None
        if raw_public:
            try:
                public_url = public_base_url(raw_public)
            except ValueError as exc:
                problems.append(_e(exc))
        else:
            problems.append(
                "No public URL is set. GitHub delivers the App's webhooks to "
                f"<code>PUBLIC_URL{WEBHOOK_PATH}</code>, so it must be an address GitHub can "
                "reach (for example <code>https://baro-bot.fly.dev</code>). Enter it below or "
                "set <code>BARO_PUBLIC_URL</code>."
            )
        if not name or len(name) > MAX_NAME_LENGTH:
            problems.append(f"The App's name must have 1 to {MAX_NAME_LENGTH} characters.")
        if org and not _ORG.fullmatch(org):
            problems.append("That is not a GitHub organization name.")

        guess = f"https://{self.settings.fly_app}.fly.dev" if self.settings.fly_app else ""
        inputs = (
            f'<form method="get" action="{_e(request.url_for("setup"))}">'
            "<label>Public URL (where GitHub sends webhooks) "
            f'<input type="url" name="public_url" value="{_e(raw_public or guess)}" '
            'placeholder="https://baro-bot.fly.dev"></label>'
            "<label>Organization (empty: register under your own account) "
            f'<input type="text" name="org" value="{_e(org)}"></label>'
            f'<label>App name <input type="text" name="name" value="{_e(name)}"></label>'
            "<button>Update</button></form>"
        )
        if problems or public_url is None:
            notes = "".join(f'<p class="warn">{p}</p>' for p in problems)
            return _page("Register baro-bot as a GitHub App", notes + inputs)

        state = secrets.token_urlsafe(32)
        callback = _external_url(request, "setup_callback", public_url)
        content = manifest(name=name, public_url=public_url, redirect_url=callback)
        target = new_app_url(self.settings.github_web_url, state, org or None)
        where = f"the organization <b>{_e(org)}</b>" if org else "your own GitHub account"
        permissions = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in PERMISSIONS.items())
        body = (
            f"<p>This registers a private GitHub App named <b>{_e(name)}</b> under {where} "
            f"on <code>{_e(self.settings.github_web_url)}</code>.</p><ul>"
            f"<li>Webhook URL: <code>{_e(content['hook_attributes']['url'])}</code></li>"
            f"<li>Events: {_e(', '.join(EVENTS))}</li>"
            f"<li>Permissions: {permissions} (no workflows)</li>"
            f"<li>GitHub sends you back to <code>{_e(callback)}</code></li></ul>"
            f'<form method="post" action="{_e(target)}">'
            f'<input type="hidden" name="manifest" value="{_e(json.dumps(content))}">'
            f"<button>Create the GitHub App on GitHub</button></form>"
            f"<h2>Change</h2>{inputs}"
        )
        response = _page("Register baro-bot as a GitHub App", body)
        response.set_cookie(
            STATE_COOKIE,
            state,
            max_age=STATE_MAX_AGE,
            path="/setup",
            httponly=True,
            samesite="lax",
            secure=callback.startswith("https://"),
        )
        return response

    async def callback(self, request: Request) -> Response:
        """Check the state, exchange the code, show the credentials once."""
        start = _e(request.url_for("setup"))
        again = f'<p>Start again at <a href="{start}">/setup</a>.</p>'
        state = request.query_params.get("state", "")
        expected = request.cookies.get(STATE_COOKIE, "")
        if not state or not expected or not hmac.compare_digest(state, expected):
            return _page(
                "This setup link is not valid here",
                "<p>The request does not carry the state this browser was given when it "
                "started the setup (it expired after an hour, came from another browser, or "
                "was forged).</p>" + again,
                400,
            )
        code = request.query_params.get("code", "")
        if not _CODE.fullmatch(code):
            return _page("No code from GitHub", "<p>GitHub sent no usable code.</p>" + again, 400)
        try:
            app = await exchange_code(self.settings.github_api_url, code)
        except CodeRejected:
            return _page(
                "This code was already used or expired",
                "<p>This code was already used or expired; GitHub hands out an App's "
                "credentials once. If the App was created but you did not copy them, generate "
                "a new private key and webhook secret in the App's settings on GitHub, or "
                "delete the App.</p>" + again,
                400,
            )
        except GitHubUnavailable as exc:
            log.warning("GitHub App registration: %s", exc)
            return _page(
                "GitHub could not be reached",
                f"<p>{_e(exc)}. The code is only used once it is exchanged, so reloading this "
                "page retries.</p>",
                502,
            )
        log.info("registered GitHub App id=%s slug=%s", app.id, app.slug)
        return self._registered(app)

    def _registered(self, app: RegisteredApp) -> Response:
        line = secrets_command(
            app, fly_app=self.settings.fly_app, api_url=self.settings.github_api_url
        )
        missing_secret = (
            '<p class="warn">GitHub returned no webhook secret: set one in the App\'s settings '
            "and add it as <code>BARO_GITHUB_WEBHOOK_SECRET</code>.</p>"
            if app.webhook_secret is None
            else ""
        )
        where = "" if self.settings.fly_app else " (in the directory with <code>fly.toml</code>)"
        body = (
            f'<p>GitHub created the App <a href="{_href(app.html_url)}">{_e(app.name)}</a> '
            f"(id {_e(app.id)}, slug <code>{_e(app.slug)}</code>).</p>"
            '<p class="warn"><b>Copy this now: it is shown once.</b> The private key and '
            "webhook secret are not stored or logged anywhere; reloading this page will not "
            "show them again.</p>"
            f"<p>Store them as secrets of the deployment{where}:</p>"
            f"<pre>{_e(line)}</pre>{missing_secret}"
            f'<p>Then <a href="{_href(app.html_url + "/installations/new")}">install the App</a> '
            "on the repositories it should work on.</p>"
        )
        return _page("GitHub App registered", body)


# --- `baro-bot setup` -----------------------------------------------------------------------


def create_setup_app(settings: SetupSettings) -> Starlette:
    """Only the setup pages (and `/` pointing at them): no Redis, no App settings."""

    async def root(request: Request) -> Response:
        return RedirectResponse(request.url_for("setup"), status_code=303)

    return Starlette(routes=[*SetupPages(settings).routes(), Route("/", root, methods=["GET"])])


def serve(settings: SetupSettings, host: str | None = None, port: int | None = None) -> None:
    """Bind first, then print the URL to open (so it is true, and port 0 works), then serve."""
    import uvicorn

    from app.logs import build_handler

    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(build_handler("setup", "text", ()))
    root.setLevel(logging.INFO)

    host = host or settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, settings.port if port is None else port))
    sock.listen(64)
    bound = int(sock.getsockname()[1])
    shown = "localhost" if host in ("0.0.0.0", "::") else host  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    print(f"baro-bot setup: open http://{shown}:{bound}/setup in your browser", flush=True)
    config = uvicorn.Config(
        create_setup_app(settings),
        log_config=None,  # uvicorn's loggers propagate to our handler
        access_log=False,  # the callback's URL carries the one-time code
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()

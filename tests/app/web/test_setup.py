"""App registration (manifest flow): the manifest, the secrets line, and `baro-bot setup`
run as a real process against the testbed GitHub, driven like a browser."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from githubkit.cache import MemCacheStrategy
from pydantic import SecretStr
from starlette.applications import Starlette

from app.github import GitHubGateway
from app.settings import ConfigError, Settings, load_settings
from app.web.setup import (
    EVENTS,
    STATE_COOKIE,
    RegisteredApp,
    SetupSettings,
    create_setup_app,
    load_setup_settings,
    manifest,
    new_app_url,
    secrets_command,
)
from testbed.github.server import TestbedServer, bind_socket, running_testbed
from testbed.github.state import GitHubState
from testbed.keys import KeyPair

ROOT = Path(__file__).resolve().parents[3]
PUBLIC = "https://baro.example.test"
NASTY_SECRET = 'it\'s a "secret" $HOME `id` \\n ;|&'


@pytest.fixture(scope="module")
def pem(app_key: KeyPair) -> str:
    """The key as GitHub's manifest flow hands it out (PKCS#1)."""
    return app_key.pkcs1_pem


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("BARO_") or name == "FLY_APP_NAME":
            monkeypatch.delenv(name)
    return monkeypatch


# --- pure parts -----------------------------------------------------------------------------


def test_manifest_asks_for_exactly_what_the_bot_needs() -> None:
    data = manifest(name="baro-bot", public_url=PUBLIC, redirect_url="http://localhost:8000/cb")
    assert data["name"] == "baro-bot"
    assert data["url"] == PUBLIC
    assert data["hook_attributes"] == {"url": f"{PUBLIC}/webhooks/github", "active": True}
    assert data["redirect_url"] == "http://localhost:8000/cb"
    assert data["public"] is False
    assert data["default_events"] == [
        "issues",
        "issue_comment",
        "pull_request_review",
        "pull_request_review_comment",
    ]
    assert data["default_permissions"] == {
        "metadata": "read",
        "issues": "write",
        "pull_requests": "write",
        "contents": "write",
        "checks": "write",
    }
    assert "workflows" not in json.dumps(data)


def test_new_app_url_for_user_and_org() -> None:
    assert new_app_url("https://github.com", "s t") == (
        "https://github.com/settings/apps/new?state=s+t"
    )
    assert new_app_url("https://ghe.example", "s", "acme-inc") == (
        "https://ghe.example/organizations/acme-inc/settings/apps/new?state=s"
    )
    assert "/organizations/a%2F..%2Fb/" in new_app_url("https://github.com", "s", "a/../b")


def test_secrets_line_round_trips_through_the_shell_and_settings(
    clean_env: pytest.MonkeyPatch, pem: str
) -> None:
    app = RegisteredApp(
        id=4242, slug="baro-bot", name="baro", html_url="https://github.com/apps/baro-bot",
        webhook_secret=NASTY_SECRET, pem=pem,
    )  # fmt: skip
    line = secrets_command(app, fly_app="my app")
    assert "\n" not in line
    words = shlex.split(line)
    assert words[:5] == ["fly", "secrets", "set", "-a", "my app"]
    env = dict(word.split("=", 1) for word in words[5:])
    assert list(env) == [
        "BARO_GITHUB_APP_ID",
        "BARO_GITHUB_APP_SLUG",
        "BARO_GITHUB_WEBHOOK_SECRET",
        "BARO_GITHUB_PRIVATE_KEY",
    ]
    assert "\\n" in env["BARO_GITHUB_PRIVATE_KEY"]  # one line, literal backslash-n
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.github_app_id == 4242
    assert settings.github_app_slug == "baro-bot"
    assert settings.github_webhook_secret.get_secret_value() == NASTY_SECRET
    assert settings.private_key_pem() == pem
    assert settings.github_api_url == "https://api.github.com"


def test_secrets_line_names_a_non_default_api(pem: str) -> None:
    app = RegisteredApp(1, "b", "b", "https://ghe.example/apps/b", "s", pem)
    words = shlex.split(secrets_command(app, api_url="https://ghe.example/api/v3"))
    assert words[:3] == ["fly", "secrets", "set"]
    assert "BARO_GITHUB_API_URL=https://ghe.example/api/v3" in words
    assert "-a" not in words
    assert pem not in repr(app) and "'s'" not in repr(app)


def test_setup_settings_need_no_app_credentials(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_setup_settings()
    assert settings.public_url is None and settings.fly_app is None
    assert settings.github_web_url == "https://github.com"
    clean_env.setenv("FLY_APP_NAME", "on-fly")
    clean_env.setenv("BARO_PUBLIC_URL", "https://bot.example.test/")
    settings = load_setup_settings()
    assert (settings.fly_app, settings.public_url) == ("on-fly", "https://bot.example.test")
    clean_env.setenv("BARO_FLY_APP", "chosen")
    assert load_setup_settings().fly_app == "chosen"
    clean_env.setenv("BARO_PUBLIC_URL", "ftp://nope")
    with pytest.raises(ConfigError, match=r"^BARO_PUBLIC_URL: the public URL must start with"):
        load_setup_settings()


def test_web_settings_check_the_public_url(clean_env: pytest.MonkeyPatch, pem: str) -> None:
    clean_env.setenv("BARO_GITHUB_APP_ID", "1")
    clean_env.setenv("BARO_GITHUB_PRIVATE_KEY", pem)
    clean_env.setenv("BARO_GITHUB_WEBHOOK_SECRET", "s")
    clean_env.setenv("BARO_GITHUB_APP_SLUG", "baro-bot")
    assert load_settings().public_url is None
    clean_env.setenv("BARO_PUBLIC_URL", "https://bot.example.test/")
    assert load_settings().public_url == "https://bot.example.test"
    clean_env.setenv("BARO_PUBLIC_URL", "bot.example.test")
    with pytest.raises(ConfigError, match=r"^BARO_PUBLIC_URL: .*must start with https://"):
        load_settings()


def test_setup_command_names_a_bad_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARO_")}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "setup"],
        env={**env, "BARO_PORT": "99999"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("baro-bot: configuration error: BARO_PORT:")


# --- a browser ------------------------------------------------------------------------------


@dataclass
class Form:
    method: str
    action: str
    inputs: dict[str, str] = field(default_factory=dict)


class Page(HTMLParser):
    """The forms, `<pre>` text and links of a page, as a browser would read them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.pre: list[str] = []
        self.links: dict[str, str] = {}
        self._in_pre = False
        self._href: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("method", "get").lower(), a.get("action", "")))
        elif tag == "input" and self.forms and "name" in a:
            self.forms[-1].inputs[a["name"]] = a.get("value", "")
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")
        elif tag == "a":
            self._href = a.get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        if self._in_pre:
            self.pre[-1] += data
        elif self._href is not None:
            self.links[data.strip()] = self._href
            self._href = None

    def post_form(self) -> Form | None:
        found = [f for f in self.forms if f.method == "post"]
        return found[0] if found else None


def _wait_for_url(log: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "baro-bot setup: open " in line:
                return line.split("open ", 1)[1].split(" ", 1)[0]
        if proc.poll() is not None:
            raise AssertionError(f"setup exited: {log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"setup did not print its URL: {log.read_text()}")


@dataclass
class SetupProcess:
    url: str  # .../setup
    log: Path

    @property
    def base(self) -> str:
        return self.url.removesuffix("/setup")


@pytest.fixture(scope="module")
def testbed() -> Iterator[TestbedServer]:
    state = GitHubState()
    with running_testbed(state) as tb:
        yield tb
    state.close()


@pytest.fixture(scope="module")
def setup_process(
    testbed: TestbedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SetupProcess]:
    """`python -m app.cli setup --port 0` with no App settings and no Redis."""
    log = tmp_path_factory.mktemp("setup") / "setup.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARO_")}
    env.pop("FLY_APP_NAME", None)
    env.update(
        BARO_GITHUB_API_URL=testbed.url,
        BARO_GITHUB_WEB_URL=testbed.url,
        BARO_PUBLIC_URL=PUBLIC,
        BARO_FLY_APP="baro-test",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "setup", "--port", "0"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield SetupProcess(_wait_for_url(log, proc), log)
    finally:
        proc.terminate()
        proc.wait(15)


def register(browser: httpx.Client, setup_url: str, **query: str) -> tuple[httpx.Response, str]:
    """Open /setup, press the button (GitHub redirects back), follow to the callback."""
    page = browser.get(setup_url, params=query)
    assert page.status_code == 200, page.text
    form = Page(page.text).post_form()
    assert form is not None, page.text
    assert set(form.inputs) == {"manifest"}
    created = browser.post(form.action, data=form.inputs)
    assert created.status_code == 302, created.text
    callback_url = created.headers["location"]
    return browser.get(callback_url), callback_url


async def test_register_against_the_testbed(
    testbed: TestbedServer, setup_process: SetupProcess, clean_env: pytest.MonkeyPatch
) -> None:
    with httpx.Client(timeout=30) as browser:
        page = browser.get(setup_process.url)
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        cookie = page.headers["set-cookie"].lower()
        assert cookie.startswith(f"{STATE_COOKIE}=")
        assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=3600" in cookie
        form = Page(page.text).post_form()
        assert form is not None
        action = urlsplit(form.action)
        assert f"{action.scheme}://{action.netloc}{action.path}" == (
            f"{testbed.url}/settings/apps/new"
        )
        assert parse_qs(action.query)["state"] == [browser.cookies[STATE_COOKIE]]
        sent = json.loads(form.inputs["manifest"])
        assert sent["hook_attributes"]["url"] == f"{PUBLIC}/webhooks/github"
        assert sent["redirect_url"] == f"{setup_process.base}/setup/callback"

        # A forged state is refused before the code is spent.
        created = browser.post(form.action, data=form.inputs)
        callback_url = created.headers["location"]
        code = parse_qs(urlsplit(callback_url).query)["code"][0]
        forged = browser.get(
            f"{setup_process.base}/setup/callback", params={"code": code, "state": "forged"}
        )
        assert forged.status_code == 400
        assert "Start again at" in forged.text
        missing = browser.get(f"{setup_process.base}/setup/callback", params={"code": code})
        assert missing.status_code == 400
        with httpx.Client(timeout=30) as other_browser:  # right state, no cookie
            assert other_browser.get(callback_url).status_code == 400
        state = parse_qs(urlsplit(callback_url).query)["state"][0]
        for hostile in ("../../app", "x" * 200, ""):  # the code goes into an API path
            refused = browser.get(
                f"{setup_process.base}/setup/callback", params={"code": hostile, "state": state}
            )
            assert refused.status_code == 400 and "No code from GitHub" in refused.text

        done = browser.get(callback_url)
        assert done.status_code == 200, done.text
        assert done.headers["cache-control"] == "no-store"
        assert done.headers["referrer-policy"] == "no-referrer"
        shown = Page(done.text)
        assert len(shown.pre) == 1
        line = shown.pre[0]
        words = shlex.split(line)
        assert words[:5] == ["fly", "secrets", "set", "-a", "baro-test"]
        env = dict(word.split("=", 1) for word in words[5:])
        assert env["BARO_GITHUB_API_URL"] == testbed.url  # not api.github.com: named
        app = testbed.state.apps[int(env["BARO_GITHUB_APP_ID"])]
        assert shown.links["install the App"] == f"{testbed.url}/apps/{app.slug}/installations/new"
        assert shown.links[app.name] == f"{testbed.url}/apps/{app.slug}"
        assert app.events == list(EVENTS)
        assert app.permissions["issues"] == "write" and "workflows" not in app.permissions
        assert app.webhook_url == f"{PUBLIC}/webhooks/github"

        again = browser.get(callback_url)
        assert again.status_code == 400
        assert "already used or expired" in again.text
        assert "Start again at" in again.text

    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.github_webhook_secret.get_secret_value() == app.webhook_secret
    assert settings.private_key_pem() == app.private_key_pem
    gateway = GitHubGateway(settings, MemCacheStrategy())
    me = (await gateway.app.rest.apps.async_get_authenticated()).parsed_data
    assert (me.id, me.slug) == (settings.github_app_id, settings.github_app_slug)

    logs = setup_process.log.read_text()
    assert f"registered GitHub App id={app.id} slug={app.slug}" in logs
    assert app.webhook_secret not in logs
    assert app.client_secret not in logs
    assert parse_qs(urlsplit(callback_url).query)["code"][0] not in logs
    for pem_line in app.private_key_pem.splitlines():
        assert pem_line not in logs


def test_org_and_name_come_from_the_query_and_are_escaped(
    testbed: TestbedServer, setup_process: SetupProcess
) -> None:
    name = "<i>Bot</i> & co"
    with httpx.Client(timeout=30) as browser:
        page = browser.get(setup_process.url, params={"org": "acme-inc", "name": name})
        assert "<i>" not in page.text and "&lt;i&gt;Bot&lt;/i&gt; &amp; co" in page.text
        done, _ = register(browser, setup_process.url, org="acme-inc", name=name)
    assert done.status_code == 200
    assert "<i>" not in done.text and "&lt;i&gt;Bot&lt;/i&gt;" in done.text
    slug = dict(w.split("=", 1) for w in shlex.split(Page(done.text).pre[0])[5:])[
        "BARO_GITHUB_APP_SLUG"
    ]
    app = next(a for a in testbed.state.apps.values() if a.slug == slug)
    assert (app.name, app.owner.login, app.owner.type) == (name, "acme-inc", "Organization")


def test_without_a_public_url_there_is_no_button(setup_process: SetupProcess) -> None:
    with httpx.Client(timeout=30) as browser:
        bad = browser.get(setup_process.url, params={"public_url": "javascript:alert(1)"})
        assert bad.status_code == 200
        assert Page(bad.text).post_form() is None
        assert "must start with https://" in bad.text
        assert STATE_COOKIE not in bad.headers.get("set-cookie", "")
        bad_org = browser.get(setup_process.url, params={"org": "a/../b"})
        assert Page(bad_org.text).post_form() is None


# --- the same pages in-process: no public URL, GitHub down, the configured web process -------


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    sock = bind_socket()
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_no_public_url_says_so(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BARO_FLY_APP", "baro-prod")
    with serve(create_setup_app(load_setup_settings())) as url:
        root = httpx.get(url, follow_redirects=True)
        assert root.url.path == "/setup"
        page = Page(root.text)
        assert page.post_form() is None
        assert "No public URL is set" in root.text
        get_form = page.forms[0]
        assert get_form.inputs["public_url"] == "https://baro-prod.fly.dev"  # a suggestion


def test_github_unreachable_is_a_502_and_the_code_survives(
    clean_env: pytest.MonkeyPatch, testbed: TestbedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    closed = bind_socket()
    dead_api = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    settings = SetupSettings(github_api_url=dead_api, github_web_url=testbed.url, public_url=PUBLIC)
    with serve(create_setup_app(settings)) as url, httpx.Client(timeout=30) as browser:
        down, callback_url = register(browser, f"{url}/setup")
        assert down.status_code == 502
        assert "GitHub could not be reached" in down.text
        assert "cache-control" in down.headers
    # The code was never spent: a server that reaches GitHub still gets the App.
    settings = SetupSettings(github_api_url=testbed.url, public_url=PUBLIC)
    testbed.state.faults.add(method="POST", path="/app-manifests/", status=503)
    with serve(create_setup_app(settings)) as url, httpx.Client(timeout=30) as browser:
        page = browser.get(f"{url}/setup")  # a state cookie for this server
        state = browser.cookies[STATE_COOKIE]
        code = parse_qs(urlsplit(callback_url).query)["code"][0]
        params = {"code": code, "state": state}
        answer = browser.get(f"{url}/setup/callback", params=params)
        assert answer.status_code == 502 and "HTTP 503" in answer.text
        # Unspent, the code would fetch the App's private key: the server's logs hide it.
        exchanges = [r.getMessage() for r in caplog.records if "/app-manifests/" in r.getMessage()]
        assert exchanges
        assert all("/app-manifests/[redacted]/conversions" in m for m in exchanges)
        assert not any(code in m for m in exchanges)
        assert page.status_code == 200
        assert browser.get(f"{url}/setup/callback", params=params).status_code == 200


def test_configured_web_process_serves_setup(redis_url: str, pem: str) -> None:
    from app.web.app import create_app

    settings = Settings(
        github_app_id=1,
        github_private_key=SecretStr(pem),
        github_webhook_secret=SecretStr("configured-secret"),
        github_app_slug="baro-bot",
        redis_url=redis_url,
        github_web_url="https://ghe.example",
        public_url=PUBLIC,
    )
    with serve(create_app(settings)) as url:
        page = httpx.get(f"{url}/setup")
        assert page.status_code == 200
        form = Page(page.text).post_form()
        assert form is not None
        assert form.action.startswith("https://ghe.example/settings/apps/new?state=")
        assert json.loads(form.inputs["manifest"])["redirect_url"] == f"{url}/setup/callback"
        assert httpx.get(f"{url}/setup/callback").status_code == 400


def test_callback_scheme_follows_the_public_url_behind_a_proxy() -> None:
    """Fly terminates TLS: the request says http://, the browser is on https://."""
    settings = SetupSettings(public_url="https://bot.example.test", github_web_url="https://gh")
    with serve(create_setup_app(settings)) as url:
        page = httpx.get(f"{url}/setup", headers={"host": "bot.example.test"})
    form = Page(page.text).post_form()
    assert form is not None
    redirect = json.loads(form.inputs["manifest"])["redirect_url"]
    assert redirect == "https://bot.example.test/setup/callback"
    assert "secure" in page.headers["set-cookie"].lower()

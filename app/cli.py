"""`baro-bot web|worker|runner`: the three process kinds; `baro-bot setup` registers the App."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.logs import configure_logging
from app.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from arq.worker import Worker


def _web(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from app.web.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers propagate to our handler
        access_log=False,
        proxy_headers=True,
    )


def _supervised(build: Callable[[], Worker], name: str) -> None:
    """Run an arq worker; when Redis goes away, arq's loop dies: start it again with backoff
    instead of exiting, so a Redis restart does not need an operator."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    log = logging.getLogger(f"baro.{name}")
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            build().run()
            return
        except (RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
            if time.monotonic() - started > 60:
                delay = 0.5
            log.error("%s lost Redis (%s); restarting in %.1fs", name, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _worker(settings: Settings, args: argparse.Namespace) -> None:
    from app.worker.main import build_worker

    engines = None
    if any(m.engine != "baro" for m in settings.models):
        # The composition root: the worker plans on an agent CLI in the runner's sandbox.
        from runner.engine_planner import planner_engines

        engines = planner_engines(settings)
    _supervised(lambda: build_worker(settings, engines), "worker")


def _runner(settings: Settings, args: argparse.Namespace) -> None:
    from runner.worker import RunnerStartupError, build_worker

    try:
        _supervised(lambda: build_worker(settings), "runner")
    except RunnerStartupError as exc:
        print(f"baro-bot: {exc}", file=sys.stderr)
        raise SystemExit(3) from None


def _setup(args: argparse.Namespace) -> int:
    """The App does not exist yet: only the setup pages, no App settings, no Redis."""
    from app.web.setup import load_setup_settings, serve

    try:
        settings = load_setup_settings()
    except ConfigError as exc:
        print(f"baro-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    serve(settings, args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="baro-bot", description="baro-bot: turn a GitHub issue into a pull request."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    web = sub.add_parser("web", help="serve webhooks (uvicorn)")
    web.add_argument("--host", default=None, help="bind address (default: BARO_HOST)")
    web.add_argument("--port", type=int, default=None, help="port (default: BARO_PORT)")
    web.set_defaults(handler=_web)
    sub.add_parser(
        "worker", help="run the orchestrator (arq queue baro:orchestrator)"
    ).set_defaults(handler=_worker)
    sub.add_parser("runner", help="run stories (arq queue baro:runner)").set_defaults(
        handler=_runner
    )
    setup = sub.add_parser("setup", help="register the GitHub App (manifest flow; no settings)")
    setup.add_argument("--host", default=None, help="bind address (default: BARO_HOST)")
    setup.add_argument("--port", type=int, default=None, help="port (default: BARO_PORT)")
    args = parser.parse_args(argv)
    if args.command == "setup":
        return _setup(args)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"baro-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, args.command)
    args.handler(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`baro-bot web|worker|runner`: the three process kinds."""

from __future__ import annotations

import argparse
import logging
import sys

from app.settings import ConfigError, Settings, load_settings


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _web(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from app.web import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=True,
    )


def _worker(settings: Settings, args: argparse.Namespace) -> None:
    from app.worker import build_worker

    build_worker(settings).run()


def _runner(settings: Settings, args: argparse.Namespace) -> None:
    from runner.worker import build_worker

    build_worker(settings).run()


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
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"baro-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)
    args.handler(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

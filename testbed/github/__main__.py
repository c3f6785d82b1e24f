"""`python -m testbed.github --port N [--host H] [--state-file app.json]`: a standalone testbed.

Boots with one App and writes its id, slug, private key and webhook secret to the state file
so another process (the bot, the demo) can be configured with them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import uvicorn

from testbed.github.server import bind_socket, create_app
from testbed.github.state import GitHubState


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbed.github", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state-file", type=Path, help="write the App's credentials here")
    parser.add_argument("--slug", default="baro-bot")
    parser.add_argument("--webhook-secret", default=None)
    parser.add_argument("--data-dir", type=Path, help="where bare repos live (default: temp)")
    args = parser.parse_args(argv)

    state = GitHubState(root=args.data_dir)
    sock = bind_socket(args.host, args.port)
    port = int(sock.getsockname()[1])
    state.base_url = f"http://{args.host}:{port}"
    app = state.create_app(args.slug, webhook_secret=args.webhook_secret)
    info = {
        "base_url": state.base_url,
        "app_id": app.id,
        "slug": app.slug,
        "client_id": app.client_id,
        "bot_login": app.bot.login,
        "private_key_pem": app.private_key_pem,
        "webhook_secret": app.webhook_secret,
    }
    if args.state_file is not None:
        args.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.state_file.with_suffix(args.state_file.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh, indent=2)
        tmp.replace(args.state_file)
    print(f"testbed GitHub on {state.base_url} (app {app.id} {app.slug})", flush=True)
    config = uvicorn.Config(
        create_app(state),
        log_level="info",
        lifespan="off",
        timeout_graceful_shutdown=2,
        loop="asyncio",  # git http-backend's pipes misbehave under uvloop
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        state.close()


if __name__ == "__main__":
    main()

"""`python -m testbed.models --script FILE --port N [--host 127.0.0.1]`"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from testbed.models.script import ScriptError, load_script
from testbed.models.server import ModelServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.models",
        description="Scripted OpenAI/Anthropic-compatible model server (see README.md).",
    )
    parser.add_argument("--script", required=True, help="YAML or JSON script file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except (OSError, ScriptError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = ModelServer(script)
    uvicorn.run(
        server.app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

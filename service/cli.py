"""``riskscore serve``: run the HTTP scoring service under uvicorn.

The service's own command, needing nothing beyond the service's dependencies. The
``riskscore`` entry point (``training.cli``) offers it beside the offline commands;
``python -m service.cli serve`` runs it where the ``train`` extra is not installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from service.settings import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve ``service.app`` with the settings from the environment; 2 without a secret."""
    import uvicorn

    from service.api.connections import GuardedProtocol

    settings = Settings.from_env(os.environ)
    if not settings.secret:
        print("RISKSCORE_SECRET is not set; `make run` writes a development one to .run/env")
        return 2
    uvicorn.run(
        "service.app:app_from_env",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        # Nothing reads the client address or scheme, so X-Forwarded-* rewriting is
        # per-request work for nothing; the Server header only advertises the stack.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        # Slow and silent clients: header and body time limits, a header size limit and a
        # connection cap (service.api.connections); idle kept-alive connections closed.
        http=GuardedProtocol,
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
    )
    return 0


def add_serve_command(sub: Any) -> None:
    """Register ``serve`` on an ``argparse`` sub-parsers object."""
    serve = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP scoring service. Configuration comes from RISKSCORE_* "
        "environment variables (see README); options here override host and port.",
    )
    serve.add_argument("--host", help="address to listen on (RISKSCORE_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (RISKSCORE_PORT, 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.set_defaults(func=cmd_serve)


def main(argv: Sequence[str] | None = None) -> int:
    """The service-only command line: ``serve``."""
    parser = argparse.ArgumentParser(prog="python -m service.cli")
    add_serve_command(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m worker api [--host H] [--port P]`: the read API (uvicorn)."""

from __future__ import annotations

import argparse

import uvicorn

from worker.api.app import create_app
from worker.config import Settings
from worker.errors import ConfigurationError, InvalidInput


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api",
        help="serve the read API (Mida-compatible results, /healthz, /metrics)",
        description="Serve experiment results over HTTP from Redis (REDIS_URL, AB_KEY_PREFIX). "
        "The API starts without Redis; /healthz reports whether Redis answers.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port must be between 1 and 65535, got {args.port}.")
    settings = Settings.from_env()
    if settings.api_workers < 1:
        raise ConfigurationError(f"AB_API_WORKERS must be at least 1, got {settings.api_workers}.")
    # proxy_headers (uvicorn's default) makes share links use the proxy's scheme and host.
    # uvicorn picks uvloop and httptools (both dependencies) by itself.
    if settings.api_workers == 1:
        app = create_app(settings)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    else:
        # Several processes need the app as an import string; each builds its own.
        uvicorn.run(
            "worker.api.app:app_from_env",
            factory=True,
            workers=settings.api_workers,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
        )
    return 0

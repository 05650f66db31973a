"""`python -m worker keys create | list | revoke`: API keys of the read API.

Keys are stored only as SHA-256 hashes: `create` prints a key once and nothing can
show it again; `list` shows ids and creation times.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from worker.config import Settings
from worker.errors import InvalidInput, NotFound, ServiceUnavailable
from worker.store.api_keys import DEFAULT_SCOPES, SCOPES, create_key, list_keys, revoke_key
from worker.store.connection import REDIS_UNAVAILABLE, Redis, connect

PROJECT_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$", re.ASCII)

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="create, list or revoke API keys of the read API",
        description="Each key belongs to one project; only its SHA-256 hash is stored.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key for a project and print it once")
    create.add_argument("--project", required=True, help="project key the API key grants")
    create.add_argument(
        "--scope",
        default=",".join(DEFAULT_SCOPES),
        help=f"comma-separated scopes among {', '.join(SCOPES)} (default: %(default)s)",
    )
    create.set_defaults(handler=handle_create)
    listing = actions.add_parser("list", help="ids, creation times and scopes of a project's keys")
    listing.add_argument("--project", required=True, help="project key")
    listing.set_defaults(handler=handle_list)
    revoke = actions.add_parser("revoke", help="revoke a key, given the key or its id")
    revoke.add_argument("key", help="the key itself, or its id from 'keys list'")
    revoke.set_defaults(handler=handle_revoke)


def handle_create(args: argparse.Namespace) -> int:
    project = _project(args.project)
    scopes = _scopes(args.scope)
    key, record = _run(lambda redis, prefix: create_key(redis, prefix, project, scopes))
    print(key)
    print(
        f"created key {record.id} for project {project} with scopes "
        f"{','.join(record.scopes)}; it is shown only this once.",
        file=sys.stderr,
    )
    return 0


def handle_list(args: argparse.Namespace) -> int:
    project = _project(args.project)
    records = _run(lambda redis, prefix: list_keys(redis, prefix, project))
    if not records:
        print(f"project {project} has no API keys.", file=sys.stderr)
    for record in records:
        print(f"{record.id}  {record.created_at}  {','.join(record.scopes)}")
    return 0


def handle_revoke(args: argparse.Namespace) -> int:
    record = _run(lambda redis, prefix: revoke_key(redis, prefix, args.key))
    if record is None:
        raise NotFound("No API key matches that key or id ('keys list --project KEY' shows ids).")
    print(f"revoked key {record.id} of project {record.project_key}.")
    return 0


def _project(raw: str) -> str:
    if not PROJECT_KEY.fullmatch(raw):
        raise InvalidInput(
            f"Project key {raw!r} is invalid: use 1-80 letters, digits, '_', '.' or '-'."
        )
    return raw


def _scopes(raw: str) -> list[str]:
    scopes = [scope.strip() for scope in raw.split(",") if scope.strip()]
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(
            f"Scope {', '.join(unknown) or repr(raw)} is unknown: use a comma-separated "
            f"list of {', '.join(SCOPES)}."
        )
    return scopes


def _run(action: Callable[[Redis, str], Awaitable[T]]) -> T:
    """Run one store call against the configured Redis, with a clear error if it is down."""
    settings = Settings.from_env()

    async def run() -> T:
        async with connect(settings) as redis:
            return await action(redis, settings.key_prefix)

    try:
        return asyncio.run(run())
    except REDIS_UNAVAILABLE as error:
        raise ServiceUnavailable(
            f"Redis at {settings.redis_url} does not answer: start it with "
            "'python -m worker services up' or set REDIS_URL."
        ) from error

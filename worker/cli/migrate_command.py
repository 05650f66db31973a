"""`python -m worker migrate [--prefix OLD]`: gives a prefix written before the running
totals and day rollups existed (issue 16) both, from its hour counters, for every
experiment whose definition is stored.

Idempotent (it overwrites what it builds); safe while a worker runs (each partition and
experiment is rebuilt in a transaction that starts again if the sink writes its hours
meanwhile), quickest with the worker stopped.
"""

from __future__ import annotations

import argparse
import asyncio

from worker.config import Settings
from worker.errors import ServiceUnavailable
from worker.store.connection import REDIS_UNAVAILABLE, connect
from worker.store.rollups import Rebuilt, rebuild_rollups


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="build the running totals and day rollups of a prefix from its hour counters",
        description="Reads every experiment's hour counters in each partition and writes "
        "its running totals and UTC day rollups (overwriting them: running it twice "
        "changes nothing).",
    )
    parser.add_argument("--prefix", help="key prefix to migrate (default: AB_KEY_PREFIX)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    prefix = args.prefix or settings.key_prefix

    def report(done: Rebuilt) -> None:
        print(
            f"partition {done.partition} experiment {done.experiment_id}: "
            f"{done.hours} hours -> {done.days} days and totals",
            flush=True,
        )

    async def run() -> list[Rebuilt]:
        async with connect(settings) as redis:
            return await rebuild_rollups(redis, prefix, report)

    try:
        rebuilt = asyncio.run(run())
    except REDIS_UNAVAILABLE as error:
        raise ServiceUnavailable(
            f"Redis at {settings.redis_url} does not answer: start it or set REDIS_URL."
        ) from error
    experiments = len({done.experiment_id for done in rebuilt})
    print(f"migrated {prefix!r}: {experiments} experiment(s), {len(rebuilt)} partition part(s).")
    return 0

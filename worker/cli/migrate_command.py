"""`python -m worker migrate [--prefix OLD]`: brings a prefix written by an earlier layout
up to date. It moves visitor state kept with one Redis key per visitor into the visitor
buckets, rebuilds the columnar visitor store from the visitor states in segments (every
entrant gets its row, those from before the store included), and gives a prefix written
before the running totals and day rollups existed both, from its hour counters, for
every experiment whose definition is stored. The workers must be stopped for this: the
sink refuses a partition of an earlier layout until then.

Idempotent: run again, it changes nothing (a run stopped half-way finishes).
"""

from __future__ import annotations

import argparse
import asyncio

from worker.config import Settings
from worker.errors import ServiceUnavailable
from worker.store.column_migration import RebuiltColumns, rebuild_columns
from worker.store.connection import REDIS_UNAVAILABLE, connect
from worker.store.rollups import Rebuilt, rebuild_rollups
from worker.store.visitor_migration import MovedPartition, move_visitor_hashes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="bring a prefix written by an earlier layout up to date (workers stopped)",
        description="Moves visitor hashes (one key per visitor) into the visitor buckets, "
        "rebuilds the columnar visitor store in segments from the visitor states, "
        "then reads every experiment's hour counters in each partition and writes its "
        "running totals and UTC day rollups (overwriting them: running it twice changes "
        "nothing). Stop the workers first.",
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

    def report_moved(done: MovedPartition) -> None:
        print(
            f"partition {done.partition}: {done.visitors} visitor hashes -> {done.buckets} buckets",
            flush=True,
        )

    def report_columns(done: RebuiltColumns) -> None:
        print(
            f"partition {done.partition}: columns of {done.experiments} experiment(s), "
            f"{done.entrants} entrant(s) rebuilt from the visitor states; "
            f"{done.old_keys} key(s) of the earlier layout deleted",
            flush=True,
        )

    async def run() -> tuple[list[MovedPartition], list[RebuiltColumns], list[Rebuilt]]:
        async with connect(settings) as redis:
            moved = await move_visitor_hashes(redis, prefix, report_moved)
            columns = await rebuild_columns(redis, prefix, report_columns)
            return moved, columns, await rebuild_rollups(redis, prefix, report)

    try:
        moved, columns, rebuilt = asyncio.run(run())
    except REDIS_UNAVAILABLE as error:
        raise ServiceUnavailable(
            f"Redis at {settings.redis_url} does not answer: start it or set REDIS_URL."
        ) from error
    experiments = len({done.experiment_id for done in rebuilt})
    visitors = sum(done.visitors for done in moved)
    entrants = sum(done.entrants for done in columns)
    print(
        f"migrated {prefix!r}: {visitors} visitor(s) into buckets, columns of {entrants} "
        f"entrant(s) rebuilt, {experiments} experiment(s), {len(rebuilt)} partition part(s)."
    )
    return 0

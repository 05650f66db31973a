"""`python -m worker results EXPERIMENT_ID`: per-variant numbers read from Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from worker.cli.errors import UserError
from worker.config import Settings
from worker.results.variant_totals import variant_totals
from worker.store.counter_reader import read_counters
from worker.store.definitions import load_definition

COLUMNS = (
    ("variant_id", "variant"),
    ("visitors", "visitors"),
    ("visits", "visits"),
    ("conversions", "conv"),
    ("converted_visits", "conv visits"),
    ("goal_events", "events"),
    ("orders", "orders"),
    ("revenue", "revenue"),
    ("multiple_exposures", "multi exp"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "results",
        help="per-variant visitors, visits, conversions and revenue of an experiment",
    )
    parser.add_argument("experiment_id")
    parser.add_argument("--goal", help="goal key (default: the primary goal)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=handle)


async def collect(settings: Settings, experiment_id: str, goal: str | None) -> dict[str, Any]:
    """The result document the command prints (and tests compare)."""
    async with Redis.from_url(settings.redis_url) as redis:
        definition = await load_definition(redis, settings.key_prefix, experiment_id)
        if definition is None:
            raise UserError(
                f"No experiment {experiment_id!r} is known: publish it with "
                "'python -m worker experiments apply FILE' and keep the worker running."
            )
        goal_key = goal or definition.primary_goal.key
        if goal is not None and all(g.key != goal for g in definition.goals):
            known = ", ".join(g.key for g in definition.goals)
            raise UserError(f"Experiment {experiment_id!r} has no goal {goal!r} (it has: {known}).")
        cells = await read_counters(redis, settings.key_prefix, experiment_id)
    ordered = [definition.control.id] + [v.id for v in definition.variants if not v.is_control]
    rows = variant_totals(cells, goal_key, ordered)
    return {
        "experiment_id": experiment_id,
        "status": definition.status.value,
        "goal": goal_key,
        "variants": [row.as_dict() for row in rows],
    }


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        document = asyncio.run(collect(settings, args.experiment_id, args.goal))
    except redis.exceptions.ConnectionError as error:
        raise UserError(
            f"Redis at {settings.redis_url} does not answer: start it with "
            "'python -m worker services up' or set REDIS_URL."
        ) from error
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print(f"{document['experiment_id']} ({document['status']}), goal {document['goal']}")
    print("  ".join(f"{title:>11}" for _, title in COLUMNS))
    for row in document["variants"]:
        cells = [
            f"{row[name]:>11.2f}" if isinstance(row[name], float) else f"{row[name]:>11}"
            for name, _ in COLUMNS
        ]
        print("  ".join(cells))
    return 0

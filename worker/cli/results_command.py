"""`python -m worker results EXPERIMENT_ID`: numbers and statistics, read from Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import date
from typing import Any

from pydantic import ValidationError

from worker.config import Settings
from worker.errors import InvalidInput, NotFound, ServiceUnavailable
from worker.results.presets import preset_filter
from worker.results.query import ResultQuery
from worker.results.service import compute_result
from worker.store.connection import REDIS_UNAVAILABLE, connect
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
        help="per-variant numbers and statistics of an experiment (with Mida-style filters)",
    )
    parser.add_argument("experiment_id")
    parser.add_argument("--goal", help="goal key (default: the primary goal)")
    parser.add_argument("--start-date", type=date.fromisoformat, help="YYYY-MM-DD, entry date")
    parser.add_argument("--end-date", type=date.fromisoformat, help="YYYY-MM-DD, entry date")
    parser.add_argument("--tz", type=int, default=0, help="timezone offset in hours (default 0)")
    parser.add_argument("--filter-by", help="Mida presets, e.g. mobile,country-US,paid")
    parser.add_argument(
        "--breakdown", help="device, browser, os, country, visitor_type, source, region, city, ..."
    )
    parser.add_argument("--min-count", type=int, default=1, help="goal events a visitor needs")
    parser.add_argument(
        "--timeframe-days", type=int, help="count goal events within N days of entry"
    )
    parser.add_argument("--visits", action="store_true", help="count visits instead of visitors")
    parser.add_argument("--reference", help="reference variant (default: the control)")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.set_defaults(handler=handle)


def build_query(args: argparse.Namespace) -> ResultQuery:
    """The query of the flags, or an InvalidInput naming the bad one."""
    try:
        return ResultQuery(
            start_date=args.start_date,
            end_date=args.end_date,
            tz=args.tz,
            goal=args.goal,
            segment=preset_filter(args.filter_by) if args.filter_by else (),
            breakdown=args.breakdown,
            min_count=args.min_count,
            timeframe_days=args.timeframe_days,
            count_unit="visits" if args.visits else "visitors",
            reference_variant=args.reference,
        )
    except (ValidationError, ValueError) as error:
        raise InvalidInput(f"invalid query: {_first_error(error)}") from error


def _first_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        item = error.errors(include_url=False)[0]
        return f"{'.'.join(str(p) for p in item['loc']) or 'query'}: {item['msg']}"
    return str(error)


async def collect(settings: Settings, experiment_id: str, query: ResultQuery) -> dict[str, Any]:
    """The result document of the query for one goal (what the command prints)."""
    async with connect(settings) as redis:
        definition = await load_definition(redis, settings.key_prefix, experiment_id)
        if definition is None:
            raise NotFound(
                f"No experiment {experiment_id!r} is known: publish it with "
                "'python -m worker experiments apply FILE' and keep the worker running."
            )
        try:
            goal = query.goal_key(definition)
            query.variant_order(definition)
        except ValueError as error:
            raise InvalidInput(f"{error}.") from error
        document = await compute_result(redis, settings.key_prefix, definition, query)
    result = document["goals"][goal]
    return {
        "experiment_id": experiment_id,
        "status": definition.status.value,
        "goal": goal,
        "srm_p_value": document["srm_p_value"],
        "variants": result["variants"],
        "breakdown": document.get("breakdown"),
        "segments": {
            label: segment["goals"][goal]["variants"]
            for label, segment in (document.get("segments") or {}).items()
        },
    }


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    query = build_query(args)
    try:
        document = asyncio.run(collect(settings, args.experiment_id, query))
    except REDIS_UNAVAILABLE as error:
        raise ServiceUnavailable(
            f"Redis at {settings.redis_url} does not answer: start it with "
            "'python -m worker services up' or set REDIS_URL."
        ) from error
    if args.json:
        print(json.dumps(document, indent=2, default=str))
        return 0
    srm = document["srm_p_value"]
    print(f"{document['experiment_id']} ({document['status']}), goal {document['goal']}, "
          f"SRM p = {'n/a' if srm is None else f'{srm:.4f}'}")  # fmt: skip
    _print_table(document["variants"])
    for label, rows in document["segments"].items():
        print(f"\n{document['breakdown']} = {label}")
        _print_table(rows)
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    print("  ".join(f"{title:>11}" for _, title in COLUMNS) + "  verdict")
    for row in rows:
        cells = [
            f"{row[name]:>11.2f}" if isinstance(row[name], float) else f"{row[name]:>11}"
            for name, _ in COLUMNS
        ]
        print("  ".join(cells) + "  " + verdict(row.get("statistics")))


def verdict(statistics: dict[str, Any] | None) -> str:
    """One plain-language line of a variant's statistics against the reference."""
    if statistics is None:
        return "reference"
    improvement = statistics.get("improvement")
    lift = "n/a" if improvement is None else f"{improvement:+.1f} %"
    chance = statistics.get("chance_to_win")
    if chance is not None:
        return f"{lift}, {chance:.0%} chance to beat the reference"
    p_value = statistics.get("p_value_adjusted")
    return f"{lift}, p = {'n/a' if p_value is None else f'{p_value:.4f}'}"

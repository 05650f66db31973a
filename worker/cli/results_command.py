"""`python -m worker results EXPERIMENT_ID`: numbers and statistics, read from Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from datetime import date

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.config import Settings
from worker.errors import InvalidInput, NotFound, ServiceUnavailable
from worker.events.experiment import ExperimentDefinition, ExperimentStatus, GoalType
from worker.results.contract import ResultDocument, VariantRow, VariantStatistics, VisitAnalysis
from worker.results.presets import preset_filter
from worker.results.query import CountUnit, Dimension, ResultQuery
from worker.results.service import compute_result
from worker.results.verdict import (
    UNCLUSTERED_NOTE,
    horizon_text,
    power_target,
    power_unit,
    reported_p_value,
    shown_interval,
    verdict,
)
from worker.store.connection import REDIS_UNAVAILABLE, connect
from worker.store.definitions import load_definition

COLUMNS: tuple[tuple[Callable[[VariantRow], str | int | float], str], ...] = (
    (lambda row: row.variant_id, "variant"),
    (lambda row: row.visitors, "visitors"),
    (lambda row: row.visits, "visits"),
    (lambda row: row.conversions, "conv"),
    (lambda row: row.converted_visits, "conv visits"),
    (lambda row: row.goal_events, "events"),
    (lambda row: row.orders, "orders"),
    (lambda row: row.revenue, "revenue"),
    (lambda row: row.multiple_exposures, "multi exp"),
)
"""The table's columns: each cell's value, and the column's title."""


class GoalResult(BaseModel):
    """What the command shows: one goal's rows, overall and per breakdown segment."""

    model_config = ConfigDict(frozen=True)

    experiment_id: str
    status: ExperimentStatus
    goal: str
    goal_type: GoalType
    unit: CountUnit = Field(description="The denominator of rates and values per unit.")
    cap: float | None = Field(default=None, description="The goal's cap per visitor, if any.")
    visit_analysis: VisitAnalysis | None = Field(
        default=None, description="How per-visit numbers were analysed (visit unit only)."
    )
    confidence_threshold_percent: float
    srm_p_value: float | None
    variants: list[VariantRow]
    breakdown: Dimension | None
    segments: dict[str, list[VariantRow]]


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


async def collect(settings: Settings, experiment_id: str, query: ResultQuery) -> GoalResult:
    """The result of the query for one goal (what the command prints)."""
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
    return goal_result(definition, document, goal)


def goal_result(
    definition: ExperimentDefinition, document: ResultDocument, goal: str
) -> GoalResult:
    """What the command shows of one goal of a result document."""
    block = document.goals[goal]
    return GoalResult(
        experiment_id=definition.id,
        status=definition.status,
        goal=goal,
        goal_type=block.type,
        unit=block.unit,
        cap=block.cap,
        visit_analysis=block.visit_analysis,
        confidence_threshold_percent=definition.stats.confidence_threshold_percent,
        srm_p_value=document.srm_p_value,
        variants=block.variants,
        breakdown=document.breakdown,
        segments={
            label: segment.goals[goal].variants for label, segment in document.segments.items()
        },
    )


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    query = build_query(args)
    try:
        result = asyncio.run(collect(settings, args.experiment_id, query))
    except REDIS_UNAVAILABLE as error:
        raise ServiceUnavailable(
            f"Redis at {settings.redis_url} does not answer: start it with "
            "'python -m worker services up' or set REDIS_URL."
        ) from error
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        return 0
    srm = result.srm_p_value
    print(f"{result.experiment_id} ({result.status}), goal {result.goal}, "
          f"SRM p = {'n/a' if srm is None else f'{srm:.4f}'}")  # fmt: skip
    for line in notes(result):
        print(line)
    _print_table(result.variants, result)
    for line in power_lines(result):
        print(line)
    for label, rows in result.segments.items():
        print(f"\n{result.breakdown} = {label}")
        _print_table(rows, result)
    return 0


def notes(result: GoalResult) -> list[str]:
    """What to know before reading the numbers: the goal's cap, and how per-visit
    numbers were analysed."""
    lines = []
    if result.cap is not None:
        value = "revenue" if result.goal_type is GoalType.REVENUE else "goal events"
        lines.append(f"{value} capped at {result.cap:g} per visitor")
    if result.visit_analysis == "clustered":
        lines.append(
            "per-visit numbers analysed with the visitor as unit (visits of one visitor "
            "are not independent)"
        )
    elif result.visit_analysis == "unclustered":
        lines.append(UNCLUSTERED_NOTE)
    return lines


def power_lines(result: GoalResult) -> list[str]:
    """Per treatment with power numbers: the lift each test detects now and what it
    still needs for the planned lift."""
    unit = power_unit(result.unit, result.visit_analysis)
    return [
        f"power of {row.variant_id} for {power_target(power)}: fixed horizon "
        f"{horizon_text(power.fixed_horizon, unit)}; sequential "
        f"{horizon_text(power.sequential, unit)}"
        for row in result.variants
        if row.statistics is not None and (power := row.statistics.power) is not None
    ]


def _print_table(rows: list[VariantRow], result: GoalResult) -> None:
    print("  ".join(f"{title:>11}" for _, title in COLUMNS) + "  verdict")
    for row in rows:
        values = [value(row) for value, _ in COLUMNS]
        cells = [f"{v:>11.2f}" if isinstance(v, float) else f"{v:>11}" for v in values]
        print("  ".join(cells) + "  " + _verdict_text(row, result))


def _verdict_text(row: VariantRow, result: GoalResult) -> str:
    """Per metric, its lift with its own interval and verdict: a revenue or count goal's
    conversion rate, then the goal's own metric (the one decisions read), then a
    revenue goal's revenue per order."""
    goal_type, threshold_percent = result.goal_type, result.confidence_threshold_percent
    if goal_type is GoalType.CONVERSION:
        text = _verdict_line(row.is_reference, row.statistics, True, threshold_percent)
        return text + _cuped_text(row, goal_type, threshold_percent)
    conversion = _verdict_line(row.is_reference, row.conversion_statistics, True, threshold_percent)
    # Revenue can be negative (refunds); goal events cannot.
    value = _verdict_line(
        row.is_reference, row.statistics, goal_type is GoalType.COUNT, threshold_percent
    )
    if row.is_reference:
        return value
    per_visitor = "revenue" if goal_type is GoalType.REVENUE else "events"
    text = f"conversion rate {conversion}; {per_visitor} per {result.unit[:-1]} {value}"
    if goal_type is GoalType.REVENUE:
        # Revenue per order can be negative (refunds).
        per_order = _verdict_line(False, row.revenue_per_order_statistics, False, threshold_percent)
        text += f"; revenue per order {per_order}"
    return text + _cuped_text(row, goal_type, threshold_percent)


def _cuped_text(row: VariantRow, goal_type: GoalType, threshold_percent: float) -> str:
    """The goal's own metric adjusted by CUPED, when the row has that analysis."""
    if row.cuped_statistics is None:
        return ""
    # Revenue can be negative (refunds); rates and goal events cannot.
    adjusted = _verdict_line(
        False, row.cuped_statistics, goal_type is not GoalType.REVENUE, threshold_percent
    )
    return f"; CUPED-adjusted {adjusted}"


def _verdict_line(
    reference: bool,
    statistics: VariantStatistics | None,
    non_negative: bool,
    threshold_percent: float,
) -> str:
    """One metric's lift with its interval, when there are statistics, and its verdict."""
    said = verdict(
        reference=reference,
        chance_to_beat_percent=None
        if statistics is None or statistics.chance_to_win is None
        else 100.0 * statistics.chance_to_win,
        p_value=None if statistics is None else reported_p_value(statistics),
        improvement=None if statistics is None else statistics.improvement,
        threshold_percent=threshold_percent,
    ).text
    if statistics is None or statistics.improvement is None:
        return said
    interval, note = shown_interval(statistics, non_negative)
    band = "" if interval is None else f" [{_side(interval[0], '-')} to {_side(interval[1], '+')}]"
    clipped = "" if note is None else f" ({note})"
    return f"{statistics.improvement:+.1f} %{band}{clipped}, {said}"


def _side(side: float | None, unbounded: str) -> str:
    """An interval side in percent; an unbounded one (one-sided tests) as infinity of the
    ``unbounded`` sign."""
    return f"{unbounded}∞" if side is None else f"{100.0 * side:+.1f} %"

"""Definitions and result documents → Mida's response bodies (pure).

A result document (``worker.results.contract.ResultDocument``, what snapshots store)
holds per goal the per-variant rows in reference-first order with their statistics.
Everything here only reads it. The document's power section (``statistics.power``)
has no field in Mida's documented result, so it is not added here; the results page
and the ``results`` command show it. Mida's results are per visitor only, so a
per-visit analysis never reaches these shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

from worker.api.experiment_state import days_running
from worker.api.mida.models import (
    Breakdown,
    Configuration,
    DetailVariant,
    DistributionResponse,
    DistributionVariant,
    ExperimentDetail,
    ExperimentDetailsResponse,
    ExperimentSummary,
    GoalInfo,
    MetricRow,
    ResultResponse,
    ResultVariant,
    Statistics,
    Targeting,
    TimeseriesRow,
    TimeseriesVariant,
)
from worker.events.experiment import (
    Engine,
    ExperimentDefinition,
    ExperimentStatus,
    ExperimentType,
    Goal,
    GoalType,
    Variant,
)
from worker.results.contract import ResultDocument, VariantRow, VariantStatistics
from worker.results.verdict import reported_p_value, shown_interval
from worker.stats.common import Interval

StatusLabel = Literal["draft", "live", "inactive"]
StatusCode = Literal[9, 1, 0]

# Mida knows no "completed": a finished experiment is inactive (and is_completed).
STATUS: dict[ExperimentStatus, tuple[StatusLabel, StatusCode]] = {
    ExperimentStatus.DRAFT: ("draft", 9),
    ExperimentStatus.LIVE: ("live", 1),
    ExperimentStatus.INACTIVE: ("inactive", 0),
    ExperimentStatus.COMPLETED: ("inactive", 0),
}
TRAFFIC_ALLOCATION = 100.0
"""Every assignment sent to the worker is in the experiment: nothing is held out here."""

DIGITS = 4
"""Percentages and money are rounded to this many decimals, enough for any display."""


def goal_info(goal: Goal) -> GoalInfo:
    """A goal as Mida describes it."""
    return GoalInfo(
        goal_key=goal.key, goal_name=goal.name, goal_type=goal.type.value, goal_value=goal.key
    )


def goal_of(definition: ExperimentDefinition, goal_key: str) -> Goal:
    """The goal of the experiment with this key (the key must exist)."""
    return next(goal for goal in definition.goals if goal.key == goal_key)


def mida_time(moment: datetime | None) -> str | None:
    """Mida's timestamp format: UTC with milliseconds, e.g. 2024-01-15T10:30:00.000Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def experiment_summary(definition: ExperimentDefinition) -> ExperimentSummary:
    """One row of the experiment list."""
    _, code = STATUS[definition.status]
    return ExperimentSummary(
        test_id=definition.id,
        test_name=definition.name,
        url=None,
        status=code,
        is_completed=1 if definition.status is ExperimentStatus.COMPLETED else 0,
        created_at=mida_time(definition.started_at),
        updated_at=mida_time(definition.ended_at or definition.started_at),
    )


def experiment_details(definition: ExperimentDefinition) -> ExperimentDetailsResponse:
    """The details of one experiment."""
    label, code = STATUS[definition.status]
    weights = _weights_percent(definition)
    return ExperimentDetailsResponse(
        success=True,
        experiment=ExperimentDetail(
            test_id=definition.id,
            test_name=definition.name,
            url=None,
            status=code,
            status_label=label,
            created_at=mida_time(definition.started_at),
            updated_at=mida_time(definition.ended_at or definition.started_at),
            goal_profile_id=definition.primary_goal.key,
            variants=[
                DetailVariant(
                    variant_id=variant.id,
                    name=variant.name,
                    is_control=variant.is_control,
                    traffic_weight=weights[variant.id],
                )
                for variant in _control_first(definition)
            ],
            configuration=Configuration(
                traffic_allocation=TRAFFIC_ALLOCATION,
                confidence_interval=definition.stats.confidence_threshold_percent,
                stats_engine=_engine(definition),
                sequential=definition.stats.sequential,
            ),
            targeting=Targeting(devices=[], browsers=[], countries=[]),
            primary_goal=goal_info(definition.primary_goal),
            secondary_goals=[goal_info(goal) for goal in definition.goals if not goal.primary],
        ),
    )


def distribution(definition: ExperimentDefinition) -> DistributionResponse:
    """Configured traffic splits; a bandit's splits move, so they are not reported."""
    label, _ = STATUS[definition.status]
    is_mab = definition.type is ExperimentType.MAB
    weights = _weights_percent(definition)
    equal = len(set(weights.values())) == 1
    return DistributionResponse(
        success=True,
        test_id=definition.id,
        test_name=definition.name,
        status=label,
        traffic_allocation=TRAFFIC_ALLOCATION,
        distribution_mode="mab" if is_mab else "equal" if equal else "custom",
        is_mab=is_mab,
        variants=[
            DistributionVariant(
                variant_id=variant.id,
                name=variant.name,
                traffic_weight=None if is_mab else weights[variant.id],
                variant_status=_variant_status(weights[variant.id]),
            )
            for variant in _control_first(definition)
        ],
    )


def result_response(
    definition: ExperimentDefinition,
    document: ResultDocument,
    goal_key: str,
    ended_at: datetime | None,
    now: datetime,
) -> ResultResponse:
    """Mida's result of one goal from a result document (overall and, if any, segments)."""
    label, code = STATUS[definition.status]
    goal = goal_of(definition, goal_key)
    rows = document.goals[goal_key].variants
    visitors = _visitors(rows)
    fields: dict[str, Any] = {
        "success": True,
        "test_id": definition.id,
        "test_name": definition.name,
        "status": label,
        "status_code": code,
        "start_date": mida_time(definition.started_at),
        "end_date": mida_time(ended_at),
        "days_running": days_running(definition, ended_at, now),
        "primary_goal": goal_info(definition.primary_goal),
        "goal": goal_info(goal),
        "stats_engine": _engine(definition),
        "confidence_threshold_percent": definition.stats.confidence_threshold_percent,
        "total_visitors": visitors,
        "total_conversions": _conversions(rows),
        "has_revenue": goal.type is GoalType.REVENUE,
        "srm_p_value": document.srm_p_value,
        "variants": variant_rows(definition, rows, goal.type),
    }
    if goal.type is GoalType.REVENUE:
        revenue = sum(row.revenue for row in rows)
        orders = sum(row.orders for row in rows)
        fields |= {
            "total_revenue": _round(revenue),
            "total_orders": orders,
            "rpv": _round(_ratio(revenue, visitors)),
            "aov": _round(_ratio(revenue, orders)),
            # Counters sum values as sent; they keep no currency to report.
            "currency": None,
        }
    if document.breakdown:
        fields["breakdown_by"] = _mida_breakdown_name(document.breakdown)
        fields["breakdowns"] = [
            breakdown(definition, label, segment.goals[goal_key].variants, goal.type)
            for label, segment in document.segments.items()
            if goal_key in segment.goals
        ]
    return ResultResponse(**fields)


def metric_row(
    definition: ExperimentDefinition, document: ResultDocument, goal_key: str
) -> MetricRow:
    """One goal of ``/metrics``."""
    rows = document.goals[goal_key].variants
    goal = goal_of(definition, goal_key)
    return MetricRow(
        goal=goal_info(goal),
        total_visitors=_visitors(rows),
        total_conversions=_conversions(rows),
        variants=variant_rows(definition, rows, goal.type),
    )


def timeseries_row(day: date, document: ResultDocument, goal_key: str) -> TimeseriesRow:
    """One day of the series from the document of that day's cohort."""
    return TimeseriesRow(
        date=day.isoformat(),
        variants=[
            TimeseriesVariant(
                variant_id=row.variant_id,
                name=row.name,
                is_control=row.is_control,
                visitors=row.visitors,
                conversions=row.conversions,
                conversion_rate=_percent(row.conversions, row.visitors),
                revenue=_round(row.revenue),
                orders=row.orders,
            )
            for row in document.goals[goal_key].variants
        ],
    )


def variant_rows(
    definition: ExperimentDefinition, rows: Sequence[VariantRow], goal_type: GoalType
) -> list[ResultVariant]:
    """Mida's variant objects; the first row is the reference (the control).

    Each lift comes with the statistics of its own metric: ``improvement`` (the
    conversion rate) with ``statistics``, and a revenue or count goal's value per
    visitor with its ``*_per_visitor_statistics``.
    """
    control = rows[0]
    weights = _weights_percent(definition)
    out = []
    for row in rows:
        is_control = row is control
        fields: dict[str, Any] = {
            "variant_id": row.variant_id,
            "name": row.name,
            "visitors": row.visitors,
            "conversions": row.conversions,
            "conversion_rate": _percent(row.conversions, row.visitors),
            "revenue": _round(row.revenue),
            "orders": row.orders,
            "rpv": _round(_ratio(row.revenue, row.visitors)),
            "aov": _round(_ratio(row.revenue, row.orders)),
            # A stored document may name a variant the definition has since dropped.
            "traffic_weight": weights.get(row.variant_id, 0.0),
            "variant_status": _variant_status(weights.get(row.variant_id, 0.0)),
            "is_control": row.is_control,
            "statistics": None,
        }
        if not is_control:
            fields |= (
                _lifts(control, row, goal_type)
                | _statistics_fields(definition, row, goal_type)
                | _cuped_fields(definition, row, goal_type)
            )
        out.append(ResultVariant(**fields))
    return out


def breakdown(
    definition: ExperimentDefinition, label: str, rows: Sequence[VariantRow], goal_type: GoalType
) -> Breakdown:
    """One segment of a breakdown: variant rows with lifts against the segment's control."""
    visitors, conversions = _visitors(rows), _conversions(rows)
    return Breakdown(
        criteria=label,
        total_visitors=visitors,
        total_conversions=conversions,
        conversion_rate=_percent(conversions, visitors),
        variants=variant_rows(definition, rows, goal_type),
    )


def _visitors(rows: Sequence[VariantRow]) -> int:
    return sum(row.visitors for row in rows)


def _conversions(rows: Sequence[VariantRow]) -> int:
    return sum(row.conversions for row in rows)


def _lifts(control: VariantRow, row: VariantRow, goal_type: GoalType) -> dict[str, float]:
    """``improvement``, the RPV improvement and, for a count goal, the events-per-visitor
    improvement or, for a revenue goal, the order value's, each only when the control
    has a base."""
    lifts = {
        "improvement": _lift(_rate(row), _rate(control)),
        "revenue_per_visitor_improvement": _lift(_rpv(row), _rpv(control)),
    }
    if goal_type is GoalType.COUNT:
        lifts["events_per_visitor_improvement"] = _lift(_epv(row), _epv(control))
    if goal_type is GoalType.REVENUE:
        lifts["aov_improvement"] = _lift(_aov(row), _aov(control))
    return {name: value for name, value in lifts.items() if value is not None}


def _statistics_fields(
    definition: ExperimentDefinition, row: VariantRow, goal_type: GoalType
) -> dict[str, Statistics | None]:
    """A treatment's statistics, each under the field of the lift it describes.

    The row's ``statistics`` are on the goal's metric: for a conversion goal that is
    ``improvement``'s conversion rate; a revenue or count goal's conversion rate has
    its own ``conversion_statistics``, and its value per visitor goes beside the
    value's lift; a revenue goal's revenue per order goes beside ``aov_improvement``.
    """
    if goal_type is GoalType.CONVERSION:
        return {"statistics": _statistics(definition, row.statistics, non_negative=True)}
    value = "revenue_per_visitor" if goal_type is GoalType.REVENUE else "events_per_visitor"
    fields = {
        "statistics": _statistics(definition, row.conversion_statistics, non_negative=True),
        # Revenue can be negative (refunds); goal events cannot.
        f"{value}_statistics": _statistics(
            definition, row.statistics, non_negative=goal_type is GoalType.COUNT
        ),
    }
    if goal_type is GoalType.REVENUE:
        fields["aov_statistics"] = _statistics(
            definition, row.revenue_per_order_statistics, non_negative=False
        )
    return fields


def _cuped_fields(
    definition: ExperimentDefinition, row: VariantRow, goal_type: GoalType
) -> dict[str, Any]:
    """The CUPED-adjusted lift of the goal's own metric, its statistics and variance
    reduction, in percent; nothing without a CUPED analysis."""
    adjusted = row.cuped_statistics
    if adjusted is None:
        return {}
    reduction = adjusted.variance_reduction
    return {
        "cuped_improvement": adjusted.improvement,
        # Revenue can be negative (refunds); rates and goal events cannot.
        "cuped_statistics": _statistics(
            definition, adjusted, non_negative=goal_type is not GoalType.REVENUE
        ),
        "cuped_variance_reduction": None if reduction is None else _round(100.0 * reduction),
    }


def _statistics(
    definition: ExperimentDefinition, raw: VariantStatistics | None, non_negative: bool
) -> Statistics | None:
    """The engine's numbers in Mida's units (percent for lifts and chances);
    ``non_negative`` says the metric cannot be negative, so its interval is clipped."""
    if raw is None:
        return None
    engine = _engine(definition)
    fields: dict[str, Any] = {"engine": engine, "sequential": definition.stats.sequential}
    interval, note = shown_interval(raw, non_negative)
    fields["credible_interval" if engine == "bayesian" else "confidence_interval"] = (
        None if interval is None else _percent_interval(interval)
    )
    if note is not None:
        fields["interval_note"] = note
    if engine == "bayesian":
        chance = raw.chance_to_win
        risk = raw.risk
        fields |= {
            "chance_to_beat_control": None if chance is None else _round(100.0 * chance),
            # risk = (loss if the control is kept, loss if this variant is chosen)
            "expected_loss": None if not risk else _round(100.0 * risk[1]),
        }
    else:
        fields["p_value"] = reported_p_value(raw)
    return Statistics(**fields)


def _percent_interval(interval: Interval) -> Interval:
    return (
        None if interval[0] is None else _round(100.0 * interval[0]),
        None if interval[1] is None else _round(100.0 * interval[1]),
    )


def _mida_breakdown_name(dimension: str) -> str:
    return "user_type" if dimension == "visitor_type" else dimension


def _engine(definition: ExperimentDefinition) -> Literal["bayesian", "frequentist"]:
    return "bayesian" if definition.stats.engine is Engine.BAYESIAN else "frequentist"


def _control_first(definition: ExperimentDefinition) -> list[Variant]:
    return [definition.control] + [v for v in definition.variants if not v.is_control]


def _weights_percent(definition: ExperimentDefinition) -> dict[str, float]:
    total = sum(variant.traffic_weight for variant in definition.variants)
    return {v.id: _round(100.0 * v.traffic_weight / total) for v in definition.variants}


def _variant_status(weight: float) -> Literal["active", "paused"]:
    return "active" if weight > 0 else "paused"


def _rate(row: VariantRow) -> float | None:
    return _ratio(row.conversions, row.visitors) if row.visitors else None


def _rpv(row: VariantRow) -> float | None:
    return _ratio(row.revenue, row.visitors) if row.visitors else None


def _aov(row: VariantRow) -> float | None:
    return _ratio(row.revenue, row.orders) if row.orders else None


def _epv(row: VariantRow) -> float | None:
    return _ratio(row.goal_events, row.visitors) if row.visitors else None


def _lift(value: float | None, base: float | None) -> float | None:
    """Relative change in percent; undefined without a positive base."""
    if value is None or base is None or base <= 0:
        return None  # over a negative base (refunds) the sign would reverse
    return _round(100.0 * (value / base - 1.0))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def _percent(numerator: float, denominator: float) -> float:
    return _round(100.0 * _ratio(numerator, denominator))


def _round(value: float) -> float:
    return round(float(value), DIGITS)

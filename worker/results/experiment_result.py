"""Query totals + experiment definition → the result document with statistics (pure).

Every goal passed in is analysed as one family (``analyze_goals``), so the configured
correction spans variants and goals. The reference variant is the control unless the
query overrides it; it comes first everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from worker.events.experiment import Engine, ExperimentDefinition, Goal, GoalType, Variant
from worker.results.contract import (
    AnalysisSettings,
    FrequentistCheck,
    GoalBlock,
    HorizonPower,
    PowerEstimate,
    ResultDocument,
    SegmentResult,
    VariantRow,
    VariantStatistics,
    VisitAnalysis,
)
from worker.results.query import CountUnit, ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals
from worker.stats import AnalysisRequest, AnalysisResult, analyze_goals
from worker.stats.corrections import Correction
from worker.stats.power import DEFAULT_POWER, PowerNumbers, TreatmentPower, treatment_power
from worker.stats.schema import Metric, VariantResult
from worker.stats.sequential import tuning_for_plan
from worker.stats.srm import (
    DEFAULT_SRM_THRESHOLD,
    sequential_srm_p_value,
    srm_alarm,
    srm_p_value,
)

SEGMENT_STATISTICS = 50
"""Breakdown segments analysed by default; each costs a full analysis of every goal."""

Rows = Mapping[str, list[VariantTotals]]
"""Goal key → rows of one segment (or of the whole query)."""


def result_document(
    definition: ExperimentDefinition,
    totals: Mapping[str, QueryTotals],
    query: ResultQuery | None = None,
    max_segment_statistics: int = SEGMENT_STATISTICS,
    days_with_data: float | None = None,
) -> ResultDocument:
    """The result of ``query`` for the goals in ``totals`` (goal key → its totals).

    All totals must come from the same query. Without a breakdown, ``segments`` is
    empty; with one, each segment carries its numbers, and the
    ``max_segment_statistics`` segments with most visitors also their statistics.
    ``days_with_data`` (the days the totals span) turns the power section's units
    still needed into days; without it those days are null.
    """
    query = query or ResultQuery()
    order = query.variant_order(definition)
    overall_rows = {
        goal: _ordered(goal_totals.variants, order) for goal, goal_totals in totals.items()
    }
    segment_rows = {
        label: {
            goal: _ordered((t.segments or {}).get(label, []), order) for goal, t in totals.items()
        }
        for label in dict.fromkeys(label for t in totals.values() for label in (t.segments or {}))
    }
    largest = set(
        sorted(
            segment_rows,
            key=lambda label: (
                -max(sum(r.visitors for r in rows) for rows in segment_rows[label].values())
            ),
        )[:max_segment_statistics]
    )
    segments = {
        label: _analysis(
            definition, query, order, rows, statistics=label in largest, days=days_with_data
        )
        for label, rows in segment_rows.items()
    }
    stats = definition.stats
    overall = _analysis(
        definition, query, order, overall_rows, statistics=True, checks=True, days=days_with_data
    )
    return ResultDocument(
        experiment_id=definition.id,
        name=definition.name,
        status=definition.status,
        type=definition.type,
        query=query,
        goal=query.goal_key(definition),
        primary_goal=definition.primary_goal.key,
        reference_variant=order[0],
        settings=AnalysisSettings(
            engine=stats.engine,
            confidence_threshold_percent=stats.confidence_threshold_percent,
            alpha=alpha(definition),
            test_direction=stats.test_direction,
            correction=stats.correction,
            sequential=stats.sequential,
            sequential_tuning=sequential_tuning(definition),
            planned_sample_size=stats.planned_sample_size,
            prior=stats.prior,
            cuped_days=stats.cuped_days,
            minimum_detectable_effect=stats.minimum_detectable_effect,
        ),
        srm_p_value=overall.srm_p_value,
        srm_sequential_p_value=overall.srm_sequential_p_value,
        srm_alarm=overall.srm_alarm,
        goals=overall.goals,
        breakdown=query.breakdown,
        segments=segments,
    )


def alpha(definition: ExperimentDefinition) -> float:
    """The significance level of the configured confidence threshold."""
    return (100.0 - definition.stats.confidence_threshold_percent) / 100.0


def sequential_tuning(definition: ExperimentDefinition) -> int:
    """N*: as configured, else tuned to the planned sample (``tuning_for_plan``)."""
    stats = definition.stats
    if stats.sequential_tuning is not None:
        return stats.sequential_tuning
    return round(tuning_for_plan(stats.planned_sample_size))


def traffic_weights(definition: ExperimentDefinition, order: Sequence[str]) -> list[float]:
    """Configured traffic weights in ``order``, normalised to sum to one."""
    weights = [_variant(definition, variant_id).traffic_weight for variant_id in order]
    total = sum(weights)
    return [weight / total for weight in weights]


def _analysis(
    definition: ExperimentDefinition,
    query: ResultQuery,
    order: Sequence[str],
    rows: Rows,
    statistics: bool,
    checks: bool = False,
    days: float | None = None,
) -> SegmentResult:
    """SRM and the per-goal blocks of one set of rows (whole query or one segment).

    ``checks`` adds, for the Bayesian engine, the frequentist test decisions need.
    ``days`` (the days the totals span, when known) turns units still needed into days.
    """
    weights = traffic_weights(definition, order)
    goals = [goal for goal in definition.goals if goal.key in rows]
    requests = [_request(definition, query, goal.type, rows[goal.key], weights) for goal in goals]
    correction = cast(Correction, definition.stats.correction.value)
    results: list[AnalysisResult | None] = [None] * len(requests)
    frequentist: list[AnalysisResult | None] = [None] * len(requests)
    powers: list[dict[str, PowerEstimate | None]] = [{} for _ in requests]
    conversion: list[AnalysisResult | None] = [None] * len(requests)
    per_order: list[AnalysisResult | None] = [None] * len(requests)
    cuped: list[AnalysisResult | None] = [None] * len(requests)
    if statistics and requests:
        results = list(analyze_goals(requests, correction))
        effect = definition.stats.minimum_detectable_effect
        powers = [
            _power(
                treatment_power(r, effect),
                effect,
                _units_per_day(rows[goal.key], _sampled_unit(query, rows[goal.key]), days),
            )
            for goal, r in zip(goals, requests, strict=True)
        ]
        if checks and definition.stats.engine is Engine.BAYESIAN:
            # A posterior is no stopping rule: decisions gate it with the frequentist
            # test of the same comparisons (the confidence sequence when sequential).
            copies = [r.model_copy(update={"engine": "frequentist"}) for r in requests]
            frequentist = list(analyze_goals(copies, correction))
        conversion = _conversion_analyses(definition, query, goals, rows, weights, correction)
        per_order = _revenue_per_order_analyses(definition, goals, rows, weights, correction)
        cuped = _cuped_analyses(definition, query, goals, rows, weights, correction)
    # Visitors are randomised, so the split is tested on visitors whatever the unit.
    first = next(iter(rows.values()), [])
    visitors = [row.visitors for row in first]
    srm = srm_p_value(visitors, weights) if first else None
    # The alarm (and the srm_detected decision) uses the anytime-valid test: the split
    # is checked at every interval; the chi-square value is shown as vendors show it.
    sequential = sequential_srm_p_value(visitors, weights) if first else None
    return SegmentResult(
        srm_p_value=srm,
        srm_sequential_p_value=sequential,
        srm_alarm=srm_alarm(sequential, DEFAULT_SRM_THRESHOLD),
        goals={
            goal.key: _goal_block(
                definition,
                query,
                goal,
                rows[goal.key],
                weights,
                result,
                check,
                power,
                rate,
                order,
                adjusted,
            )
            for goal, result, check, power, rate, order, adjusted in zip(
                goals, results, frequentist, powers, conversion, per_order, cuped, strict=True
            )
        },
    )


def _conversion_analyses(
    definition: ExperimentDefinition,
    query: ResultQuery,
    goals: Sequence[Goal],
    rows: Rows,
    weights: list[float],
    correction: Correction,
) -> list[AnalysisResult | None]:
    """Per goal, the conversion rate of a revenue or count goal (None for conversion goals).

    People read a value goal's conversion-rate lift too, so it gets an interval of its
    own. These comparisons form a family of their own: adding them to the goals' family
    would change the corrected p-values that decisions read on the goals' metrics.
    """
    requests = {
        goal.key: _request(definition, query, GoalType.CONVERSION, rows[goal.key], weights)
        for goal in goals
        if goal.type is not GoalType.CONVERSION
    }
    return _family(goals, requests, correction)


def _revenue_per_order_analyses(
    definition: ExperimentDefinition,
    goals: Sequence[Goal],
    rows: Rows,
    weights: list[float],
    correction: Correction,
) -> list[AnalysisResult | None]:
    """Per goal, revenue per order of a revenue goal (None for other goals, and where the
    counters lack per-visitor order sums).

    Revenue per order is ΣR / ΣO, a ratio whose unit sampled is the visitor: a
    visitor's orders share their tastes and budget, so orders are not independent.
    Like the conversion rates, these comparisons are a family of their own.
    """
    requests = {
        goal.key: _analysis_request(
            definition, "ratio", rows[goal.key], weights, _revenue_per_order_input
        )
        for goal in goals
        if goal.type is GoalType.REVENUE and _has_order_sums(rows[goal.key])
    }
    return _family(goals, requests, correction)


def _cuped_analyses(
    definition: ExperimentDefinition,
    query: ResultQuery,
    goals: Sequence[Goal],
    rows: Rows,
    weights: list[float],
    correction: Correction,
) -> list[AnalysisResult | None]:
    """Per goal, its metric adjusted by CUPED (None where no adjustment applies).

    The covariate is each visitor's value of the goal in the ``cuped_days`` before entry,
    so it exists per visitor only: per-visit metrics get none. A covariate no visitor
    has (ΣX² = 0) would leave the analysis unchanged, so none is shown. These comparisons
    are a family of their own, and decisions keep reading the raw ones.
    """
    if definition.stats.cuped_days == 0 or _units(query)[0] != "visitors":
        return [None] * len(goals)
    requests = {
        goal.key: _analysis_request(
            definition,
            "proportion" if goal.type is GoalType.CONVERSION else "mean",
            rows[goal.key],
            weights,
            partial(_adjusted_input, query, goal.type),
            cuped=True,
        )
        for goal in goals
        if any(row.covariate_sum_squares > 0 for row in rows[goal.key])
    }
    return _family(goals, requests, correction)


def _adjusted_input(query: ResultQuery, goal_type: GoalType, row: VariantTotals) -> dict[str, Any]:
    """The goal's metric with its CUPED covariate sums."""
    return _metric_input(query, goal_type, row) | {
        "covariate_sum": row.covariate_sum,
        "covariate_sum_squares": row.covariate_sum_squares,
        "covariate_product_sum": row.covariate_product_sum,
    }


def _family(
    goals: Sequence[Goal], requests: Mapping[str, AnalysisRequest], correction: Correction
) -> list[AnalysisResult | None]:
    """Per goal, the analysis of its request in ``requests`` (None without one), the
    requests analysed as one correction family."""
    by_goal = dict(zip(requests, analyze_goals(list(requests.values()), correction), strict=True))
    return [by_goal.get(goal.key) for goal in goals]


def _has_order_sums(rows: Sequence[VariantTotals]) -> bool:
    """Whether every row with orders carries the per-visitor order sums a ratio needs.

    Cauchy–Schwarz, exact on integers: complete per-visitor sums have ΣO²·n ≥ (ΣO)²;
    counters written before the sums were kept have ΣO² = 0 with orders.
    """
    return all(row.orders_sum_squares * row.visitors >= row.orders**2 for row in rows)


def _revenue_per_order_input(row: VariantTotals) -> dict[str, Any]:
    return {
        "n": row.visitors,
        "sum": row.revenue,
        "sum_squares": row.revenue_sum_squares,
        "denominator_sum": row.orders,
        "denominator_sum_squares": row.orders_sum_squares,
        "main_denominator_sum_product": row.revenue_orders_product,
    }


def _visit_analysis(query: ResultQuery, rows: Sequence[VariantTotals]) -> VisitAnalysis | None:
    """How the query's per-visit metrics are analysed on ``rows`` (None: visitor unit).

    Clustered by visitor when every row carries the per-visitor visit sums; counters
    written before those were kept (cohort visits 0 beside visits, or sums that no
    complete per-visitor data gives: Cauchy–Schwarz, exact on integers) leave only
    the analysis of visits as independent units.
    """
    if _units(query)[0] != "visits":
        return None
    complete = all(
        row.visits == 0
        or (
            row.cohort_visits > 0
            and row.cohort_visits_sum_squares * row.visitors >= row.cohort_visits**2
            and row.converted_visits_sum_squares * row.visitors >= row.converted_visits**2
        )
        for row in rows
    )
    return "clustered" if complete else "unclustered"


def _sampled_unit(query: ResultQuery, rows: Sequence[VariantTotals]) -> CountUnit:
    """The unit the analysis counts as n: visitors for clustered per-visit metrics."""
    return "visitors" if _visit_analysis(query, rows) == "clustered" else _units(query)[0]


def _per_visit_input(goal_type: GoalType, row: VariantTotals) -> dict[str, Any]:
    """A per-visit metric as a ratio over the visitor's visits, the visitor as unit."""
    numerator: tuple[float, float, float]
    if goal_type is GoalType.CONVERSION:
        numerator = (
            row.converted_visits,
            row.converted_visits_sum_squares,
            row.visits_converted_visits_product,
        )
    elif goal_type is GoalType.REVENUE:
        numerator = (row.revenue, row.revenue_sum_squares, row.visits_revenue_product)
    else:
        numerator = (row.goal_events, row.goal_events_sum_squares, row.visits_goal_events_product)
    total, sum_squares, product = numerator
    return {
        "n": row.visitors,
        "sum": total,
        "sum_squares": sum_squares,
        "denominator_sum": row.cohort_visits,
        "denominator_sum_squares": row.cohort_visits_sum_squares,
        "main_denominator_sum_product": product,
    }


def _units(query: ResultQuery) -> tuple[CountUnit, str]:
    """(denominator, converted numerator) fields of VariantTotals for the query.

    Converted visits are only a proportion of visits, so asking for them implies the
    visit as unit; visitors convert at most once, so the visitor unit counts converted
    visitors.
    """
    if query.count_unit == "visits" or query.conversion_type == "converted_visits":
        return "visits", "converted_visits"
    return "visitors", "conversions"


def _metric_input(query: ResultQuery, goal_type: GoalType, row: VariantTotals) -> dict[str, Any]:
    unit, converted = _units(query)
    n = getattr(row, unit)
    if goal_type is GoalType.CONVERSION:
        # A visit converted without an exposure in it can push converted visits above
        # exposed visits; a proportion cannot exceed its base, so it is capped.
        return {"n": n, "sum": min(getattr(row, converted), n)}
    if goal_type is GoalType.REVENUE:
        return {"n": n, "sum": row.revenue, "sum_squares": row.revenue_sum_squares}
    # Per-visitor sums of squares bound per-visit ones from above: with the visit
    # unit the variance is overstated, which is conservative.
    return {"n": n, "sum": row.goal_events, "sum_squares": row.goal_events_sum_squares}


def _request(
    definition: ExperimentDefinition,
    query: ResultQuery,
    goal_type: GoalType,
    rows: list[VariantTotals],
    weights: list[float],
) -> AnalysisRequest:
    if _visit_analysis(query, rows) == "clustered":
        return _analysis_request(
            definition, "ratio", rows, weights, lambda row: _per_visit_input(goal_type, row)
        )
    return _analysis_request(
        definition,
        "proportion" if goal_type is GoalType.CONVERSION else "mean",
        rows,
        weights,
        lambda row: _metric_input(query, goal_type, row),
    )


def _analysis_request(
    definition: ExperimentDefinition,
    metric: Metric,
    rows: list[VariantTotals],
    weights: list[float],
    inputs: Callable[[VariantTotals], dict[str, Any]],
    cuped: bool = False,
) -> AnalysisRequest:
    """The engine's request on ``metric``, each row's sufficient statistics by ``inputs``
    (``cuped``: adjusted by the covariate sums the inputs carry)."""
    stats = definition.stats
    return AnalysisRequest.model_validate(
        {
            "metric": metric,
            "cuped": cuped,
            "engine": stats.engine.value,
            "sequential": stats.sequential,
            "sequential_tuning": sequential_tuning(definition),
            "test_direction": stats.test_direction.value,
            "alpha": alpha(definition),
            "correction": stats.correction.value,
            "prior": stats.prior.model_dump() if stats.prior else None,
            "weights": weights,
            "variants": [
                {"id": row.variant_id, "control": i == 0} | inputs(row)
                for i, row in enumerate(rows)
            ],
        }
    )


def _goal_block(
    definition: ExperimentDefinition,
    query: ResultQuery,
    goal: Goal,
    rows: list[VariantTotals],
    weights: list[float],
    result: AnalysisResult | None,
    check: AnalysisResult | None,
    power: Mapping[str, PowerEstimate | None],
    conversion: AnalysisResult | None,
    per_order: AnalysisResult | None,
    cuped: AnalysisResult | None,
) -> GoalBlock:
    checks = {checked.id: checked for checked in check.variants} if check else {}
    statistics = {
        v.id: VariantStatistics(
            **dict(v),
            frequentist_check=_frequentist_check(checks.get(v.id)),
            power=power.get(v.id),
        )
        for v in (result.variants if result else [])
    }
    conversion_statistics = _side_statistics(conversion)
    revenue_per_order_statistics = _side_statistics(per_order)
    cuped_statistics = _side_statistics(cuped)
    unit, converted = _units(query)
    variants = []
    for row, weight in zip(rows, weights, strict=True):
        variant = _variant(definition, row.variant_id)
        base = getattr(row, unit)
        variants.append(
            VariantRow(
                **row.as_dict(),
                name=variant.name,
                is_control=variant.is_control,
                is_reference=row is rows[0],
                traffic_weight=weight,
                units=base,
                conversion_rate=getattr(row, converted) / base if base else None,
                statistics=statistics.get(row.variant_id),
                conversion_statistics=conversion_statistics.get(row.variant_id),
                revenue_per_order_statistics=revenue_per_order_statistics.get(row.variant_id),
                cuped_statistics=cuped_statistics.get(row.variant_id),
            )
        )
    return GoalBlock(
        type=goal.type,
        unit=unit,
        cap=goal.cap,
        visit_analysis=_visit_analysis(query, rows),
        cuped_theta=cuped.cuped_theta if cuped else None,
        variants=variants,
        probability_best=result.probability_best if result else None,
        bandit_weights=result.bandit_weights if result else None,
        bandit_updated=result.bandit_updated if result else False,
    )


def _side_statistics(analysis: AnalysisResult | None) -> dict[str, VariantStatistics]:
    """Variant id → its comparison on a metric beside the goal's own (no power, no check)."""
    return {v.id: VariantStatistics(**dict(v)) for v in (analysis.variants if analysis else [])}


def _frequentist_check(checked: VariantResult | None) -> FrequentistCheck | None:
    """The numbers decisions read from the frequentist run of a Bayesian comparison."""
    if checked is None:
        return None
    return FrequentistCheck(
        p_value=checked.p_value,
        p_value_adjusted=checked.p_value_adjusted,
        ci_adjusted=checked.ci_adjusted,
    )


def _power(
    powers: Mapping[str, TreatmentPower | None], effect: float, per_day: float | None
) -> dict[str, PowerEstimate | None]:
    """The document's power sections; days at ``per_day`` units a day (None: unknown)."""
    return {
        variant_id: None
        if power is None
        else PowerEstimate(
            effect=effect,
            power=DEFAULT_POWER,
            fixed_horizon=_horizon(power.fixed_horizon, per_day),
            sequential=_horizon(power.sequential, per_day),
        )
        for variant_id, power in powers.items()
    }


def _horizon(numbers: PowerNumbers, per_day: float | None) -> HorizonPower:
    """Whole units still needed (rounded up), and the days they take at the pace so far."""
    if not math.isfinite(numbers.units_needed):
        return HorizonPower(mde=numbers.mde, units_needed=None, days_needed=None)
    units = math.ceil(numbers.units_needed)
    return HorizonPower(
        mde=numbers.mde,
        units_needed=units,
        days_needed=units / per_day if per_day else None,
    )


def _units_per_day(
    rows: Sequence[VariantTotals], unit: CountUnit, days: float | None
) -> float | None:
    """Units (all arms) per day with data so far; None without days or units."""
    total = sum(getattr(row, unit) for row in rows)
    return total / days if days and total else None


def _ordered(rows: Sequence[VariantTotals], order: Sequence[str]) -> list[VariantTotals]:
    by_id = {row.variant_id: row for row in rows}
    return [by_id.get(variant_id) or VariantTotals(variant_id) for variant_id in order]


def _variant(definition: ExperimentDefinition, variant_id: str) -> Variant:
    variant = definition.variant(variant_id)
    if variant is None:
        raise ValueError(f"experiment {definition.id!r} has no variant {variant_id!r}")
    return variant

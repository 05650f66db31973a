"""Result documents → Kameleoon's ``variationData`` (pure).

``variationData`` is keyed by variation id, the reference variation under
``_reference``; each variation's ``breakdownData`` holds the whole interval under
``_reference`` and, with a breakdown, one entry per breakdown key. Rates, improvements
and reliabilities are in percent, as Kameleoon shows them.

``improvementRate``, its ``improvementInterval`` and ``reliability`` describe the goal's
own metric, the one decisions read: the conversion rate of a conversion goal, revenue
or goal events per visitor of a revenue or count goal. Those two add the conversion
rate's lift as ``conversionRateImprovementRate`` with its own
``conversionRateImprovementInterval`` and ``conversionRateReliability``; a revenue goal
also the lift of ``averageCart`` (revenue per order) as ``averageCartImprovementRate``,
``averageCartImprovementInterval`` and ``averageCartReliability``. An interval shown
clipped at -100 % comes with an ``...IntervalNote``; per-visit numbers analysed as
independent visits (counters without per-visitor visit sums) with a
``reliabilityNote``. Kameleoon documents no field for power or sample size, so the
document's power section is not shown here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.events.experiment import GoalType
from worker.results.contract import GoalBlock, VariantRow, VariantStatistics
from worker.results.verdict import UNCLUSTERED_NOTE, shown_interval

REFERENCE = "_reference"

GoalBlocks = Mapping[str, GoalBlock]
"""Goal key → the goal block of a result document (``document.goals[goal]``)."""


def variation_data(breakdown: Mapping[str, GoalBlocks], goals: list[str]) -> dict[str, Any]:
    """``{"variationData": ...}`` of breakdown key (``_reference`` first) → goal blocks.

    Every block lists the same variants with the reference first, as result documents do.
    """
    overall = breakdown[REFERENCE]
    order = [row.variant_id for row in overall[goals[0]].variants]
    return {
        "variationData": {
            (REFERENCE if i == 0 else variant): {
                "breakdownData": {
                    key: {"generalData": _general(blocks, goals, variant)}
                    for key, blocks in breakdown.items()
                }
            }
            for i, variant in enumerate(order)
        }
    }


def _general(blocks: GoalBlocks, goals: list[str], variant: str) -> dict[str, Any]:
    rows = {goal: _row(blocks[goal], variant) for goal in goals if goal in blocks}
    first = next(iter(rows.values()), None)
    return {
        "visitCount": first.visits if first else 0,
        "visitorCount": first.visitors if first else 0,
        "goalsData": {goal: _goal_data(blocks[goal], row) for goal, row in rows.items()},
    }


def _row(block: GoalBlock, variant: str) -> VariantRow:
    # Every block of one result lists the same variants (see variation_data).
    return next(row for row in block.variants if row.variant_id == variant)


def _goal_data(block: GoalBlock, row: VariantRow) -> dict[str, Any]:
    goal_type = block.type
    statistics = row.statistics
    data = {
        "conversionCount": row.goal_events,
        "convertedVisitCount": row.converted_visits,
        "revenueCount": row.revenue,
        "averageCart": row.revenue / row.orders if row.orders else None,
        "conversionRate": None if row.conversion_rate is None else 100.0 * row.conversion_rate,
        # Revenue can be negative (refunds); conversion rates and goal events cannot.
        **_lift_data("", statistics, non_negative=goal_type is not GoalType.REVENUE),
    }
    if goal_type is not GoalType.CONVERSION:
        data |= _lift_data("conversionRate", row.conversion_statistics, non_negative=True)
    if goal_type is GoalType.REVENUE:
        data |= _lift_data("averageCart", row.revenue_per_order_statistics, non_negative=False)
    if row.cuped_statistics is not None:
        # An extension: the goal's own metric adjusted by CUPED, beside the raw lift.
        data |= _lift_data(
            "cuped", row.cuped_statistics, non_negative=goal_type is not GoalType.REVENUE
        )
        reduction = row.cuped_statistics.variance_reduction
        data["cupedVarianceReduction"] = None if reduction is None else 100.0 * reduction
    if block.visit_analysis == "unclustered":
        data["reliabilityNote"] = UNCLUSTERED_NOTE
    return data


def _lift_data(
    prefix: str, statistics: VariantStatistics | None, non_negative: bool
) -> dict[str, Any]:
    """A lift, its interval (with the note when clipped) and its reliability, in
    percent, from the statistics of one metric, so the three always describe the same
    metric; ``prefix`` names that metric in the keys (none for the goal's own)."""
    if statistics is None:
        interval, note, lift, reliability = None, None, None, None
    else:
        interval, note = shown_interval(statistics, non_negative)
        lift, reliability = statistics.improvement, statistics.reliability
    data: dict[str, Any] = {
        _key(prefix, "improvementRate"): lift,
        _key(prefix, "improvementInterval"): None
        if interval is None
        else [None if side is None else 100.0 * side for side in interval],
        _key(prefix, "reliability"): None if reliability is None else 100.0 * reliability,
    }
    if note is not None:
        data[_key(prefix, "improvementIntervalNote")] = note
    return data


def _key(prefix: str, name: str) -> str:
    """``name`` under a metric's prefix, in Kameleoon's camel case."""
    return prefix + name[0].upper() + name[1:] if prefix else name

"""Result documents → Kameleoon's ``variationData`` (pure).

``variationData`` is keyed by variation id, the reference variation under
``_reference``; each variation's ``breakdownData`` holds the whole interval under
``_reference`` and, with a breakdown, one entry per breakdown key. Rates, improvements
and reliabilities are in percent, as Kameleoon shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.results.contract import GoalBlock, VariantRow

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
        "goalsData": {goal: _goal_data(row) for goal, row in rows.items()},
    }


def _row(block: GoalBlock, variant: str) -> VariantRow:
    # Every block of one result lists the same variants (see variation_data).
    return next(row for row in block.variants if row.variant_id == variant)


def _goal_data(row: VariantRow) -> dict[str, Any]:
    statistics = row.statistics
    reliability = statistics.reliability if statistics else None
    return {
        "conversionCount": row.goal_events,
        "convertedVisitCount": row.converted_visits,
        "revenueCount": row.revenue,
        "averageCart": row.revenue / row.orders if row.orders else None,
        "conversionRate": None if row.conversion_rate is None else 100.0 * row.conversion_rate,
        "improvementRate": statistics.improvement if statistics else None,
        "reliability": None if reliability is None else 100.0 * reliability,
    }

"""Result documents → Kameleoon's ``variationData`` (pure).

``variationData`` is keyed by variation id, the reference variation under
``_reference``; each variation's ``breakdownData`` holds the whole interval under
``_reference`` and, with a breakdown, one entry per breakdown key. Rates, improvements
and reliabilities are in percent, as Kameleoon shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REFERENCE = "_reference"

GoalBlocks = Mapping[str, Mapping[str, Any]]
"""Goal key → the goal block of a result document (``document["goals"][goal]``)."""


def variation_data(breakdown: Mapping[str, GoalBlocks], goals: list[str]) -> dict[str, Any]:
    """``{"variationData": ...}`` of breakdown key (``_reference`` first) → goal blocks.

    Every block lists the same variants with the reference first, as result documents do.
    """
    overall = breakdown[REFERENCE]
    order = [row["variant_id"] for row in overall[goals[0]]["variants"]]
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
    first = next(iter(rows.values()), {})
    return {
        "visitCount": first.get("visits", 0),
        "visitorCount": first.get("visitors", 0),
        "goalsData": {goal: _goal_data(row) for goal, row in rows.items()},
    }


def _row(block: Mapping[str, Any], variant: str) -> dict[str, Any]:
    return next((row for row in block["variants"] if row["variant_id"] == variant), {})


def _goal_data(row: Mapping[str, Any]) -> dict[str, Any]:
    statistics = row.get("statistics") or {}
    orders = row.get("orders", 0)
    revenue = row.get("revenue", 0.0)
    rate = row.get("conversion_rate")
    reliability = statistics.get("reliability")
    return {
        "conversionCount": row.get("goal_events", 0),
        "convertedVisitCount": row.get("converted_visits", 0),
        "revenueCount": revenue,
        "averageCart": revenue / orders if orders else None,
        "conversionRate": None if rate is None else 100.0 * rate,
        "improvementRate": statistics.get("improvement"),
        "reliability": None if reliability is None else 100.0 * reliability,
    }

"""Hand-made pieces of result documents and of the counters they are computed from."""

from __future__ import annotations

from typing import Any

from worker.events.experiment import GoalType
from worker.results.contract import GoalBlock, VariantRow
from worker.results.variant_totals import VariantTotals

ZERO_ROW: dict[str, Any] = {
    "visitors": 0,
    "visits": 0,
    "multiple_exposures": 0,
    "conversions": 0,
    "converted_visits": 0,
    "goal_events": 0,
    "goal_events_sum_squares": 0,
    "orders": 0,
    "revenue": 0.0,
    "revenue_sum_squares": 0.0,
    "is_control": False,
    "is_reference": False,
    "traffic_weight": 0.5,
    "units": 0,
    "conversion_rate": None,
    "statistics": None,
}
"""A row's fields that a test leaves out: nothing counted, no statistics."""


def variant_row(variant_id: str, **fields: Any) -> VariantRow:
    """A variant row with ``fields`` (``name`` defaults to the id), zero elsewhere."""
    return VariantRow.model_validate(
        ZERO_ROW | {"variant_id": variant_id, "name": variant_id} | fields
    )


def goal_block(rows: list[VariantRow], goal_type: GoalType = GoalType.CONVERSION) -> GoalBlock:
    """A goal's block of ``rows`` (a conversion goal's unless told), without bandit numbers."""
    return GoalBlock(
        type=goal_type,
        unit="visitors",
        variants=rows,
        probability_best=None,
        bandit_weights=None,
        bandit_updated=False,
    )


def buyer_totals(variant_id: str, visitors: int, buyers: list[tuple[int, float]]) -> VariantTotals:
    """Counters of an arm whose ``buyers`` each placed (orders, revenue) once, in one
    visit, and whose other visitors bought nothing: every sum computed from the list."""
    orders = [o for o, _ in buyers]
    revenue = [r for _, r in buyers]
    return VariantTotals(
        variant_id,
        visitors=visitors,
        visits=visitors,
        conversions=len(buyers),
        converted_visits=len(buyers),
        goal_events=sum(orders),
        goal_events_sum_squares=sum(o * o for o in orders),
        orders=sum(orders),
        revenue=sum(revenue),
        revenue_sum_squares=sum(r * r for r in revenue),
        cohort_visits=visitors,
        cohort_visits_sum_squares=visitors,
        converted_visits_sum_squares=len(buyers),
        visits_converted_visits_product=len(buyers),
        visits_goal_events_product=sum(orders),
        visits_revenue_product=sum(revenue),
        orders_sum_squares=sum(o * o for o in orders),
        revenue_orders_product=sum(o * r for o, r in buyers),
    )

"""Per-variant totals for one goal: the numbers of DESIGN.md section 3 (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class VariantTotals:
    """Sufficient statistics of one variant for one goal."""

    variant_id: str
    visitors: int = 0
    visits: int = 0
    multiple_exposures: int = 0
    conversions: int = 0
    converted_visits: int = 0
    goal_events: int = 0
    goal_events_sum_squares: int = 0
    orders: int = 0
    revenue: float = 0.0
    revenue_sum_squares: float = 0.0
    # Per-visitor sums in the visitor's entry cohort, for the visitor-clustered
    # (delta method) analysis of per-visit metrics: V = visits, C = converted visits,
    # E = goal events, R = revenue, O = orders of one visitor.
    cohort_visits: int = 0
    """ΣV over visitors, every visit counted in the entry cohort."""
    cohort_visits_sum_squares: int = 0
    """ΣV²."""
    converted_visits_sum_squares: int = 0
    """ΣC²."""
    visits_converted_visits_product: int = 0
    """ΣV·C."""
    visits_goal_events_product: int = 0
    """ΣV·E."""
    visits_revenue_product: float = 0.0
    """ΣV·R."""
    orders_sum_squares: int = 0
    """ΣO²: revenue per order is the ratio ΣR / ΣO."""
    revenue_orders_product: float = 0.0
    """ΣR·O."""
    # CUPED: X is the visitor's value of this goal in the cuped_days before entry, on the
    # goal's own scale (converted 0/1, events, or revenue; capped like Y); Y its value
    # after entry.
    covariate_sum: float = 0.0
    """ΣX."""
    covariate_sum_squares: float = 0.0
    """ΣX²."""
    covariate_product_sum: float = 0.0
    """ΣX·Y."""

    def as_dict(self) -> dict[str, Any]:
        """The fields by name. Every field is a number or a string, so a shallow copy is
        a full one (``dataclasses.asdict`` deep-copies, 30 times slower per row)."""
        return dict(vars(self))

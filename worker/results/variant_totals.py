"""Per-variant totals for one goal: the numbers of DESIGN.md section 3 (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from worker.store.counter_reader import CellKey


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def variant_totals(
    cells: Mapping[CellKey, Mapping[str, float]], goal: str, variant_ids: Iterable[str]
) -> list[VariantTotals]:
    """Sum cells into one row per variant, in the order given (control first)."""
    rows = {variant_id: VariantTotals(variant_id) for variant_id in variant_ids}
    goal_prefix = f"g:{goal}:"
    for cell, metrics in cells.items():
        row = rows.get(cell.variant)
        if row is None:
            continue
        for metric, value in metrics.items():
            _add(row, metric, value, goal_prefix)
    return list(rows.values())


_PLAIN = {"n": "visitors", "visits": "visits", "me": "multiple_exposures"}
_GOAL = {
    "cv": "conversions",
    "cvis": "converted_visits",
    "ev": "goal_events",
    "ev2": "goal_events_sum_squares",
    "ord": "orders",
}
_GOAL_FLOAT = {"rev": "revenue", "rev2": "revenue_sum_squares"}


def _add(row: VariantTotals, metric: str, value: float, goal_prefix: str) -> None:
    if metric in _PLAIN:
        name = _PLAIN[metric]
        setattr(row, name, getattr(row, name) + int(value))
    elif metric.startswith(goal_prefix):
        suffix = metric[len(goal_prefix) :]
        if suffix in _GOAL:
            setattr(row, _GOAL[suffix], getattr(row, _GOAL[suffix]) + int(value))
        elif suffix in _GOAL_FLOAT:
            setattr(row, _GOAL_FLOAT[suffix], getattr(row, _GOAL_FLOAT[suffix]) + value)

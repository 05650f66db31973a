"""Counters → query totals: sums of the segment cells a query selects (exact, fast).

A counter cell is one (variant, hour, segment cell); visitor metrics sit at the
visitor's entry hour and ``visits`` at each visit's first-exposure hour, so date
ranges, day-of-week and hour-of-day select the same rows as the per-visitor scan.
A table read at a coarser grain (``counter_reader.Grain``: a day's row at its first
hour, the running totals without cells) answers the queries planned for that grain
with the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.results.columns import Codes, Column, encode
from worker.results.conditions import date_mask, segment_mask
from worker.results.query import CELL_FIELDS, ResultQuery
from worker.results.query_totals import QueryTotals, assemble, grouping
from worker.store.counter_reader import CellKey

VISITOR_COUNTERS = {
    "n": "visitors",
    "visits": "visits",
    "me": "multiple_exposures",
    "vc": "cohort_visits",
    "vc2": "cohort_visits_sum_squares",
}
GOAL_COUNTERS = {
    "cv": "conversions",
    "cvis": "converted_visits",
    "ev": "goal_events",
    "ev2": "goal_events_sum_squares",
    "ord": "orders",
    "rev": "revenue",
    "rev2": "revenue_sum_squares",
    "cvis2": "converted_visits_sum_squares",
    "vcvis": "visits_converted_visits_product",
    "vev": "visits_goal_events_product",
    "vrev": "visits_revenue_product",
    "ord2": "orders_sum_squares",
    "revord": "revenue_orders_product",
    "x": "covariate_sum",
    "x2": "covariate_sum_squares",
    "xy": "covariate_product_sum",
}
"""Counter suffix ``g:{goal}:{suffix}`` → VariantTotals field."""


@dataclass(frozen=True)
class CellTable:
    """All counter cells of one experiment as columns; build once per read of Redis."""

    variants: Column
    hour_buckets: Codes
    cell_columns: dict[str, Column]
    metrics: dict[str, npt.NDArray[np.float64]]
    data_hours: Codes | None = None
    """Hours that have counters, the first and last of every range included
    (``Counters.data_hours``); None: the rows' hours."""

    @classmethod
    def from_counters(
        cls, cells: Mapping[CellKey, Mapping[str, float]], data_hours: Sequence[int] | None = None
    ) -> CellTable:
        """Columns of ``read_counters``' cells: one row per cell key. Rows without a
        segment cell (the running totals) give a table without cell columns."""
        keys = list(cells)
        count = len(keys)
        segment_cells = [key.cell for key in keys]
        columns = (
            {}
            if any(cell is None for cell in segment_cells)
            else {
                name: encode((cell[position] for cell in segment_cells if cell), count)
                for position, name in enumerate(CELL_FIELDS)
            }
        )
        metric_rows: dict[str, list[int]] = defaultdict(list)
        metric_values: dict[str, list[float]] = defaultdict(list)
        for row, key in enumerate(keys):
            for metric, value in cells[key].items():
                metric_rows[metric].append(row)
                metric_values[metric].append(value)
        metrics = {}
        for metric, rows in metric_rows.items():
            dense = np.zeros(count)
            np.add.at(dense, np.array(rows, dtype=np.int64), metric_values[metric])
            metrics[metric] = dense
        return cls(
            variants=encode((key.variant for key in keys), count),
            hour_buckets=np.fromiter((key.hour for key in keys), dtype=np.int64, count=count),
            cell_columns=columns,
            metrics=metrics,
            data_hours=None if data_hours is None else np.array(data_hours, dtype=np.int64),
        )

    @property
    def size(self) -> int:
        return int(self.hour_buckets.size)

    @property
    def hours(self) -> Codes:
        return self.hour_buckets

    @property
    def hours_with_data(self) -> Codes:
        """Hours that have counters: the first and the last within any range the
        table's reads serve are among them."""
        return self.hour_buckets if self.data_hours is None else self.data_hours

    def stored_column(self, field: str, key: str | None) -> Column:
        if field not in self.cell_columns:
            if field in CELL_FIELDS:  # a table of running totals
                raise KeyError(f"the running totals cannot answer {field!r}: read days")
            raise KeyError(f"counters cannot answer {field!r}: it needs the visitor scan")
        return self.cell_columns[field]

    def reference_ms(self) -> npt.NDArray[np.float64]:
        raise KeyError("counters keep no entry times: days_* conditions need the visitor scan")


def aggregate_cells(
    table: CellTable, query: ResultQuery, goal: str, variant_ids: Sequence[str]
) -> QueryTotals:
    """Totals of ``goal`` per variant (in ``variant_ids`` order) and breakdown segment.

    Valid for queries that ``planning.plan_query`` sends to the counters; other fields
    raise KeyError. ``min_count``, ``timeframe_days`` and event filters are not applied
    here (the planner routes those queries to the scan).
    """
    mask = date_mask(table.hours, query.hour_range()) & segment_mask(query.segment, table, query.tz)
    groups = grouping(table, table.variants, variant_ids, query.breakdown, query.tz)
    counters = dict(VISITOR_COUNTERS) | {
        f"g:{goal}:{suffix}": name for suffix, name in GOAL_COUNTERS.items()
    }
    sums = {
        name: groups.sum(mask, table.metrics[metric])
        for metric, name in counters.items()
        if metric in table.metrics
    }
    return assemble(variant_ids, groups.labels, sums, query.breakdown)

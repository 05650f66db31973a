"""The answer of a query before statistics: per-variant totals, overall and per segment.

Both data sources (counter cells and the per-visitor scan) group their rows by
(variant, breakdown segment) with the helpers here, so they assemble identical shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.results.columns import MISSING_LABEL, Codes, Column, Mask, Rows, resolve_column
from worker.results.query import TIME_FIELDS, Dimension
from worker.results.variant_totals import VariantTotals

Sums = npt.NDArray[np.float64]

_FLOAT_FIELDS = {f.name for f in fields(VariantTotals) if f.type in (float, "float")}
_SUM_FIELDS = [f.name for f in fields(VariantTotals) if f.name != "variant_id"]


@dataclass(frozen=True)
class QueryTotals:
    """Rows in variant order (reference first); ``segments`` maps each breakdown value
    with at least one visitor or visit to its rows, and is None without a breakdown."""

    variants: list[VariantTotals]
    breakdown: str | None = None
    segments: dict[str, list[VariantTotals]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: rows as dicts, ``segments`` {} without a breakdown."""
        return {
            "variants": [row.as_dict() for row in self.variants],
            "breakdown": self.breakdown,
            "segments": {
                label: [row.as_dict() for row in rows]
                for label, rows in (self.segments or {}).items()
            },
        }


@dataclass(frozen=True)
class Grouping:
    """Row → group index for (variant, segment); -1 for rows of unknown variants."""

    groups: Codes
    variant_ids: list[str]
    labels: list[str]

    @property
    def size(self) -> int:
        return len(self.variant_ids) * len(self.labels)

    def sum(self, mask: Mask, weights: npt.NDArray[Any] | None = None) -> Sums:
        """Per-group count of the masked rows, or sum of their ``weights``."""
        return self.over(mask)(weights)

    def over(self, mask: Mask) -> Callable[[npt.NDArray[Any] | None], Sums]:
        """``sum`` over one mask for any weights, the mask applied once: rows outside it
        go to one extra group, dropped, so no weights are copied per call (each group
        still adds its rows in row order, as ``sum`` always did)."""
        bins = np.where(mask & (self.groups >= 0), self.groups, self.size)

        def total(weights: npt.NDArray[Any] | None = None) -> Sums:
            counted = np.bincount(bins, weights=weights, minlength=self.size + 1)
            return counted[: self.size].astype(np.float64)

        return total


def grouping(
    rows: Rows,
    variants: Column,
    variant_ids: Sequence[str],
    breakdown: Dimension | None,
    tz: int,
) -> Grouping:
    """Group the rows by variant (in ``variant_ids`` order) and breakdown value."""
    position = {variant_id: i for i, variant_id in enumerate(variant_ids)}
    to_variant = np.array(
        variants.map_values(lambda value: position.get(str(value), -1)), dtype=np.int64
    )
    variant_codes = variants.lookup(to_variant)
    if breakdown is None:
        segment_codes, labels = np.zeros(rows.size, dtype=np.int64), [""]
    else:
        column = resolve_column(rows, breakdown, None, tz)
        labels = [str(value) for value in column.values] + [MISSING_LABEL]
        segment_codes = np.where(column.codes < 0, len(labels) - 1, column.codes)
    groups = np.where(variant_codes < 0, -1, variant_codes * len(labels) + segment_codes)
    return Grouping(groups, list(variant_ids), labels)


def assemble(
    variant_ids: Sequence[str],
    labels: Sequence[str],
    sums: Mapping[str, Sums],
    breakdown: Dimension | None,
) -> QueryTotals:
    """Totals from per-group sums of every VariantTotals field (absent fields are 0).

    Sums arrive grouped as (variant, segment) in the layout of :class:`Grouping`;
    segments that share a label (a value spelled like the missing label) are merged.
    """
    distinct = _ordered_labels(labels, breakdown)
    position = {label: i for i, label in enumerate(distinct)}
    label_index = np.array([position[label] for label in labels], dtype=np.int64)
    shape = (len(variant_ids), len(labels))
    merged: dict[str, Sums] = {}
    for name in _SUM_FIELDS:
        table = sums[name].reshape(shape) if name in sums else np.zeros(shape)
        merged[name] = np.zeros((len(distinct), len(variant_ids)))
        np.add.at(merged[name], label_index, table.T)
    overall = {name: table.sum(axis=0) for name, table in merged.items()}
    rows = _rows(variant_ids, overall)
    if breakdown is None:
        return QueryTotals(rows)
    segments: dict[str, list[VariantTotals]] = {}
    for i, label in enumerate(distinct):
        segment = _rows(variant_ids, {name: table[i] for name, table in merged.items()})
        if any(row.visitors or row.visits for row in segment):
            segments[label] = segment
    return QueryTotals(rows, breakdown, segments)


def _rows(variant_ids: Sequence[str], sums: Mapping[str, Sums]) -> list[VariantTotals]:
    """One row per variant from per-variant sums of each field."""
    rows = []
    for i, variant_id in enumerate(variant_ids):
        # Counts are sums of integers, held exactly in float64 below 2**53.
        values: dict[str, Any] = {
            name: float(sums[name][i]) if name in _FLOAT_FIELDS else round(float(sums[name][i]))
            for name in _SUM_FIELDS
        }
        rows.append(VariantTotals(variant_id, **values))
    return rows


def _ordered_labels(labels: Sequence[str], breakdown: Dimension | None) -> list[str]:
    """Distinct labels: numeric order for time dimensions, else by text; missing last."""
    numeric = breakdown in TIME_FIELDS

    def order(label: str) -> tuple[bool, int, str]:
        missing = label == MISSING_LABEL
        return missing, int(label) if numeric and not missing else 0, label

    return sorted(set(labels), key=order)

"""Per-visitor state → query totals, for any query (vectorised with numpy).

The state of one experiment is turned into columns once (:class:`VisitorTable`);
each query is then a handful of boolean masks and ``bincount`` calls. Counting
follows DESIGN.md section 3 and the Lua sink, so on the queries the counters can
answer the two sources agree exactly (revenue sums up to the rounding of float
addition in a different order):

* visitors, multiple exposures, conversions, converted visits, goal events and
  revenue belong to the visitor's entry hour (the cohort);
* visits belong to the hour of each visit's first exposure (``visits``: visit id →
  hour, the visitor hash's ``vX:{visit}`` fields);
* a goal event counts iff ``t >= entry_ms`` and it is not restricted to another
  experiment; with the query's ``timeframe_days`` also ``t < entry + N days``, and
  with an event filter only if it matches;
* a visitor converts with at least ``min_count`` counted events; goal events,
  orders and revenue include every counted event of every visitor in the cohort;
* converted visits are the distinct visits (an absent visit id is the visit "_", as
  in the sink) of the counted events of converted visitors;
* with the experiment's counting rules (``ExperimentRules``, as the sink gets them): a
  goal's cap bounds each visitor's revenue (revenue goals) or goal events (count
  goals), and the CUPED covariate X is the visitor's value of the goal, on its kind's
  scale and capped, from the settled events in the window before entry;
* the per-visitor sums of the clustered analyses (V visits, C converted visits, E
  goal events, R revenue, O orders) take every visit of the visitor, as the sink's
  cohort visits do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from worker.events.segment_cell import SegmentCell
from worker.results.columns import Codes, Column, Mask, encode
from worker.results.conditions import MS_PER_DAY, date_mask, event_mask, segment_mask
from worker.results.query import CELL_FIELDS, CONTEXT_FIELDS, RAW_FIELDS, UTM_FIELDS, ResultQuery
from worker.results.query_totals import Grouping, QueryTotals, Sums, assemble, grouping
from worker.store.sink_protocol import ExperimentRules, GoalRule
from worker.store.visitor_reader import GoalEventRecord, VisitorState

MS_PER_HOUR = 3_600_000
NO_VISIT = "_"
"""The sink's visit id for events and exposures without one."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# Event attributes Mida filters on that are fields of the event, not attributes.
_EVENT_FIELDS = {"revenue": "v", "currency": "c"}


@dataclass(frozen=True)
class GoalEvents:
    """The counted events of one goal (before query filters), one row per event."""

    visitor: Codes
    time_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]  # NaN without revenue
    visit: Column
    records: list[GoalEventRecord]
    _attributes: dict[str, Column] = field(default_factory=dict)

    def attribute(self, key: str) -> Column:
        """An event attribute as a column (``revenue``/``currency`` fall back to fields)."""
        if key not in self._attributes:
            fallback = _EVENT_FIELDS.get(key)

            def value(record: GoalEventRecord) -> object:
                found = (record.get("a") or {}).get(key)
                if found is None and fallback is not None:
                    found = cast(Mapping[str, Any], record).get(fallback)
                return found

            self._attributes[key] = encode(map(value, self.records), len(self.records))
        return self._attributes[key]


@dataclass(frozen=True)
class VisitorTable:
    """Columns of one experiment's visitors; build once, query many times."""

    experiment_id: str
    visitor_ids: list[str]
    variants: Column
    entry_ms: npt.NDArray[np.int64]
    hours: Codes
    multiple_exposure: Mask
    visit_visitor: Codes
    visit_hours: Codes
    contexts: list[Mapping[str, Any]]
    goal_records: list[Mapping[str, Sequence[GoalEventRecord]]]
    counted_before_ms: int | None
    cells: Column  # the whole text of the segment cell (SegmentCell.text)
    rules: ExperimentRules | None = None
    _columns: dict[tuple[str, str | None], Column] = field(default_factory=dict)
    _goals: dict[str, GoalEvents] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        experiment_id: str,
        visitors: Iterable[VisitorState],
        counted_before_ms: int | None = None,
        rules: ExperimentRules | None = None,
    ) -> VisitorTable:
        """Columns of the visitors; ``counted_before_ms`` (a completed experiment's end)
        drops goal events from that time on, as the frozen counters stop counting;
        ``rules`` (caps, the CUPED window) are the ones the sink counts by."""
        # The loop creates no container per visitor: with a million visitors, each
        # new list or dict would keep the garbage collector scanning the inputs.
        ids: list[str] = []
        variants: list[str] = []
        entries: list[int] = []
        cells: list[str] = []
        contexts: list[Mapping[str, Any]] = []
        multiple: list[bool] = []
        goals: list[Mapping[str, Sequence[GoalEventRecord]]] = []
        visit_counts: list[int] = []
        visit_hours: list[int] = []
        for visitor in visitors:
            ids.append(visitor["visitor_id"])
            variants.append(visitor["variant"])
            entry = int(visitor["entry_ms"])
            entries.append(entry)
            cell = visitor["cell"]
            cells.append(cell if isinstance(cell, str) else SegmentCell(*cell).text)
            contexts.append(visitor.get("context") or _EMPTY)
            multiple.append(bool(visitor.get("multiple_exposure")))
            goals.append(visitor.get("goals") or _EMPTY)
            visits = visitor.get("visits")
            if visits:
                visit_counts.append(len(visits))
                visit_hours.extend(visits.values())
            else:  # every entry is a visit: the sink records it at the entry hour
                visit_counts.append(1)
                visit_hours.append(entry // MS_PER_HOUR)
        count = len(ids)
        entry_ms = np.array(entries, dtype=np.int64)
        return cls(
            experiment_id=experiment_id,
            visitor_ids=ids,
            variants=encode(variants, count),
            entry_ms=entry_ms,
            hours=entry_ms // MS_PER_HOUR,
            multiple_exposure=np.array(multiple, dtype=bool),
            visit_visitor=np.repeat(np.arange(count, dtype=np.int64), visit_counts),
            visit_hours=np.array(visit_hours, dtype=np.int64),
            contexts=contexts,
            goal_records=goals,
            counted_before_ms=counted_before_ms,
            cells=encode(cells, count),
            rules=rules,
        )

    @property
    def size(self) -> int:
        return len(self.visitor_ids)

    @property
    def hours_with_data(self) -> Codes:
        """The visitors' entry hours (the pace of the result counts them)."""
        return self.hours

    def stored_column(self, field: str, key: str | None) -> Column:
        """A visitor field as a column, built on first use."""
        if (field, key) not in self._columns:
            if field in CELL_FIELDS:
                column = self._cell_column(field)
            elif field in RAW_FIELDS:
                column = self._raw_column(field)
            else:
                column = encode(self._values(field, key), self.size)
            self._columns[field, key] = column
        return self._columns[field, key]

    def _cell_column(self, field: str) -> Column:
        """One dimension of the cell text, split once per distinct cell."""
        parts = [getattr(SegmentCell.parse(str(cell)), field) for cell in self.cells.values]
        distinct = encode(parts, len(parts))
        to_value = np.append(distinct.codes, -1)  # a missing cell stays missing
        return Column(self.cells.lookup(to_value), distinct.values)

    def _raw_column(self, field: str) -> Column:
        """The producer's text of a cell field: the context's ``raw`` text where the
        value was counted as ``other`` for naming no known value, else the cell's value."""
        name = field.removesuffix("_raw")
        counted = self.stored_column(name, None)
        texts = [(context.get("raw") or _EMPTY).get(name) for context in self.contexts]
        if not any(texts):
            return counted
        codes = counted.codes.tolist()
        values = counted.values
        return encode(
            (
                text if text else (values[code] if code >= 0 else None)
                for text, code in zip(texts, codes, strict=True)
            ),
            self.size,
        )

    def reference_ms(self) -> npt.NDArray[np.float64]:
        return self.entry_ms.astype(np.float64)

    def goal_events(self, goal: str) -> GoalEvents:
        """The events of ``goal`` that count for this experiment, built on first use."""
        if goal not in self._goals:
            self._goals[goal] = self._flatten(goal)
        return self._goals[goal]

    def goal_rule(self, goal: str) -> GoalRule | None:
        """How the sink counts ``goal`` (None: a goal the definition does not name)."""
        return self.rules["goals"].get(goal) if self.rules else None

    def covariate(self, goal: str) -> npt.NDArray[np.float64] | None:
        """Per visitor, the CUPED covariate of ``goal`` (None when CUPED is off for it):
        its value in the window before entry, from the events the sink settled there
        (held ones count nowhere yet) that may count for this experiment."""
        rule = self.goal_rule(goal)
        window = self.rules["cuped_ms"] if self.rules else 0
        if rule is None or window == 0:
            return None
        counts = np.zeros(self.size)
        revenue = np.zeros(self.size)
        for index, goals in enumerate(self.goal_records):
            records = goals.get(goal)
            if not records:
                continue
            entry = int(self.entry_ms[index])
            for record in records:
                restricted = record.get("x")
                if (
                    entry - window <= int(record["t"]) < entry
                    and not cast(Mapping[str, Any], record).get("h")
                    and (restricted is None or restricted == self.experiment_id)
                ):
                    counts[index] += 1
                    revenue[index] += float(record.get("v") or 0)
        return _on_scale(rule, counts, revenue, converted=counts > 0)

    def _values(self, field: str, key: str | None) -> Iterable[object | None]:
        if field == "visitor_id":
            return iter(self.visitor_ids)
        if field in CONTEXT_FIELDS:
            return (context.get(field) for context in self.contexts)
        if field in UTM_FIELDS:
            name = field.removeprefix("utm_")
            return ((context.get("utm") or {}).get(name) for context in self.contexts)
        container = {"query_param": "query_params", "attribute": "attributes"}[field]
        return ((context.get(container) or {}).get(key) for context in self.contexts)

    def _flatten(self, goal: str) -> GoalEvents:
        visitor: list[int] = []
        kept: list[GoalEventRecord] = []
        cutoff = self.counted_before_ms
        for index, goals in enumerate(self.goal_records):
            records = goals.get(goal)
            if not records:
                continue
            entry = int(self.entry_ms[index])
            for record in records:
                restricted = record.get("x")
                time = int(record["t"])
                if (
                    time >= entry
                    and (restricted is None or restricted == self.experiment_id)
                    and (cutoff is None or time < cutoff)
                ):
                    visitor.append(index)
                    kept.append(record)
        count = len(kept)
        return GoalEvents(
            visitor=np.array(visitor, dtype=np.int64),
            time_ms=np.fromiter((int(r["t"]) for r in kept), dtype=np.int64, count=count),
            value=np.fromiter(
                (float(r["v"]) if "v" in r else np.nan for r in kept), dtype=float, count=count
            ),
            visit=encode((r.get("s") or NO_VISIT for r in kept), count),
            records=kept,
        )


@dataclass(frozen=True)
class _VisitRows:
    """The visits of a visitor table, one row per (visitor, visit)."""

    table: VisitorTable

    @property
    def size(self) -> int:
        return int(self.table.visit_visitor.size)

    @property
    def hours(self) -> Codes:
        return self.table.visit_hours

    def stored_column(self, field: str, key: str | None) -> Column:
        return self.table.stored_column(field, key).take(self.table.visit_visitor)

    def reference_ms(self) -> npt.NDArray[np.float64]:
        return self.table.reference_ms()[self.table.visit_visitor]


def scan_visitors(
    table: VisitorTable, query: ResultQuery, goal: str, variant_ids: Sequence[str]
) -> QueryTotals:
    """Totals of ``goal`` per variant (in ``variant_ids`` order) and breakdown segment."""
    hour_range = query.hour_range()
    cohort = date_mask(table.hours, hour_range) & segment_mask(query.segment, table, query.tz)
    groups = grouping(table, table.variants, variant_ids, query.breakdown, query.tz)
    sums = _goal_sums(table, query, goal, cohort, groups)
    sums["visitors"] = groups.sum(cohort)
    sums["multiple_exposures"] = groups.sum(cohort & table.multiple_exposure)

    visits = _VisitRows(table)
    visit_mask = date_mask(visits.hours, hour_range) & segment_mask(query.segment, visits, query.tz)
    visit_variants = table.variants.take(table.visit_visitor)
    visit_groups = grouping(visits, visit_variants, variant_ids, query.breakdown, query.tz)
    # Both groupings draw labels from the same values, so their group layouts match.
    assert visit_groups.labels == groups.labels
    sums["visits"] = visit_groups.sum(visit_mask)
    return assemble(variant_ids, groups.labels, sums, query.breakdown)


def _goal_sums(
    table: VisitorTable,
    query: ResultQuery,
    goal: str,
    cohort: Mask,
    groups: Grouping,
) -> dict[str, Sums]:
    """Conversion, event and revenue sums of the cohort's visitors for one goal."""
    events = table.goal_events(goal)
    matching = cohort[events.visitor] & event_mask(
        query.event_filter, events.attribute, events.visitor.size
    )
    if query.timeframe_days is not None:
        window = query.timeframe_days * MS_PER_DAY
        matching &= events.time_ms < table.entry_ms[events.visitor] + window
    size = table.size
    counts = np.bincount(events.visitor[matching], minlength=size).astype(np.float64)
    paid = matching & ~np.isnan(events.value)
    orders = np.bincount(events.visitor[paid], minlength=size).astype(np.float64)
    revenue: npt.NDArray[np.float64] = np.bincount(
        events.visitor[paid], weights=events.value[paid], minlength=size
    ).astype(np.float64)
    converted = counts >= query.min_count
    converting = matching & converted[events.visitor]
    visit_count = len(events.visit.values)
    pairs = np.unique(events.visitor[converting] * visit_count + events.visit.codes[converting])
    converted_visits = np.bincount(pairs // max(visit_count, 1), minlength=size).astype(np.float64)
    rule = table.goal_rule(goal)
    if rule is not None and "cap" in rule:
        # The sink caps the value it counts; conversions and orders stay as they are.
        if rule["kind"] == "count":
            counts = np.minimum(counts, rule["cap"])
        elif rule["kind"] == "revenue":
            revenue = np.minimum(revenue, rule["cap"])
    visits = np.bincount(table.visit_visitor, minlength=size).astype(np.float64)
    sums = {
        "conversions": groups.sum(cohort & converted),
        "converted_visits": groups.sum(cohort, converted_visits),
        "goal_events": groups.sum(cohort, counts),
        "goal_events_sum_squares": groups.sum(cohort, counts * counts),
        "orders": groups.sum(cohort, orders),
        "revenue": groups.sum(cohort, revenue),
        "revenue_sum_squares": groups.sum(cohort, revenue * revenue),
        "cohort_visits": groups.sum(cohort, visits),
        "cohort_visits_sum_squares": groups.sum(cohort, visits * visits),
        "converted_visits_sum_squares": groups.sum(cohort, converted_visits * converted_visits),
        "visits_converted_visits_product": groups.sum(cohort, visits * converted_visits),
        "visits_goal_events_product": groups.sum(cohort, visits * counts),
        "visits_revenue_product": groups.sum(cohort, visits * revenue),
        "orders_sum_squares": groups.sum(cohort, orders * orders),
        "revenue_orders_product": groups.sum(cohort, revenue * orders),
    }
    covariate = table.covariate(goal)
    if covariate is not None and rule is not None:
        outcome = _on_scale(rule, counts, revenue, converted)
        sums["covariate_sum"] = groups.sum(cohort, covariate)
        sums["covariate_sum_squares"] = groups.sum(cohort, covariate * covariate)
        sums["covariate_product_sum"] = groups.sum(cohort, covariate * outcome)
    return sums


def _on_scale(
    rule: GoalRule,
    counts: npt.NDArray[np.float64],
    revenue: npt.NDArray[np.float64],
    converted: Mask,
) -> npt.NDArray[np.float64]:
    """Per visitor, the goal's value on its kind's scale (converted 0/1, events or
    revenue), capped by the rule."""
    if rule["kind"] == "conversion":
        return converted.astype(np.float64)
    value = counts if rule["kind"] == "count" else revenue
    return np.minimum(value, rule["cap"]) if "cap" in rule else value

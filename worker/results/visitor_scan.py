"""Per-visitor state → query totals, for any query (vectorised with numpy).

The state of one experiment is turned into columns once (:class:`VisitorTable`);
each query is then a handful of boolean masks and ``bincount`` calls. Counting
follows DESIGN.md section 3 and the Lua sink, so on the queries the counters can
answer the two sources agree exactly (revenue sums up to the rounding of float
addition in a different order):

* visitors, multiple exposures, conversions, converted visits, goal events and
  revenue belong to the visitor's entry hour (the cohort);
* visits belong to the hour of each visit's first exposure (``visits``: visit id →
  hour, from the visitor state or the visit columns);
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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from worker.events.segment_cell import SegmentCell
from worker.results.columns import Codes, Column, Mask, derive, distinct_column, encode
from worker.results.conditions import MS_PER_DAY, date_mask, event_mask, segment_mask
from worker.results.query import CELL_FIELDS, CONTEXT_FIELDS, RAW_FIELDS, UTM_FIELDS, ResultQuery
from worker.results.query_totals import Grouping, QueryTotals, Sums, assemble, grouping
from worker.store.sink_protocol import ExperimentRules, GoalRule
from worker.store.visitor_columns import MULTIPLE_EXPOSURE, Interned, StoredColumns
from worker.store.visitor_reader import GoalEventRecord, VisitorState

MS_PER_HOUR = 3_600_000
NO_VISIT = "_"
"""The sink's visit id for events and exposures without one."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# Event attributes Mida filters on that are fields of the event, not attributes.
_EVENT_FIELDS = {"revenue": "v", "currency": "c"}


@dataclass(frozen=True)
class EventRows:
    """Every stored goal event of the table's visitors, one row per event, before the
    counting rules (time, restriction, the end of counting) are applied."""

    visitor: Codes
    goal: Column
    time_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]  # NaN without revenue
    visit: Codes  # equal codes of one visitor: the same visit
    restricted: Column  # the only experiment the event may count for
    held: Mask  # on hold (counted nowhere yet)
    attributes: Column  # the attribute mappings
    currency: Column
    value_text: Column | None = None
    """Revenue as the stored text; None: the text the planner sends, ``repr`` of it."""

    @classmethod
    def from_records(
        cls, goal_records: Sequence[Mapping[str, Sequence[GoalEventRecord]]]
    ) -> EventRows:
        """The rows of per-visitor records (a VisitorState's ``goals``)."""
        visitor: list[int] = []
        goals: list[str] = []
        records: list[GoalEventRecord] = []
        for index, by_goal in enumerate(goal_records):
            for goal, listed in by_goal.items():
                visitor.extend([index] * len(listed))
                goals.extend([goal] * len(listed))
                records.extend(listed)
        count = len(records)
        attribute_sets: list[Mapping[str, Any]] = []
        attribute_rows: list[int] = []
        for record in records:
            found = record.get("a")
            attribute_rows.append(len(attribute_sets) if found else -1)
            if found:
                attribute_sets.append(found)
        return cls(
            visitor=np.array(visitor, dtype=np.int64),
            goal=encode(goals, count),
            time_ms=np.fromiter((int(r["t"]) for r in records), dtype=np.int64, count=count),
            value=np.fromiter(
                (float(r["v"]) if "v" in r else np.nan for r in records), dtype=float, count=count
            ),
            visit=encode((r.get("s") or NO_VISIT for r in records), count).codes,
            restricted=encode((r.get("x") for r in records), count),
            held=np.fromiter(
                (bool(cast(Mapping[str, Any], r).get("h")) for r in records),
                dtype=bool,
                count=count,
            ),
            attributes=Column(np.array(attribute_rows, dtype=np.int64), list(attribute_sets)),
            currency=encode((r.get("c") for r in records), count),
            value_text=encode((r.get("v") for r in records), count),
        )

    def revenue_text(self) -> Column:
        """The revenue of each event as text (missing without revenue)."""
        if self.value_text is not None:
            return self.value_text
        present = ~np.isnan(self.value)
        distinct, inverse = np.unique(self.value[present], return_inverse=True)
        codes = np.full(self.value.size, -1, dtype=np.int64)
        codes[present] = inverse.reshape(-1)
        return Column(codes, [repr(float(value)) for value in distinct])

    def attribute(self, key: str) -> Column:
        """An event attribute as a column, evaluated once per distinct attribute set;
        ``revenue``/``currency`` fall back to the event's fields."""
        fallback = _EVENT_FIELDS.get(key)
        if fallback is None:
            return derive(self.attributes, lambda found: cast(Mapping[str, Any], found).get(key))
        other = self.revenue_text() if fallback == "v" else self.currency
        width = len(other.values) + 1
        pairs = (self.attributes.codes + 1) * width + other.codes + 1
        distinct, inverse = np.unique(pairs, return_inverse=True)
        attribute_sets: list[object] = [None, *self.attributes.values]
        others: list[object] = [None, *other.values]

        def value(pair: int) -> object:
            found = cast(Mapping[str, Any], attribute_sets[pair // width] or _EMPTY).get(key)
            return others[pair % width] if found is None else found

        encoded = encode(map(value, distinct.tolist()), distinct.size)
        return Column(encoded.codes[inverse.reshape(-1)], encoded.values)

    def may_count_for(self, experiment_id: str) -> Mask:
        """Events not restricted to another experiment."""
        allowed = np.array(
            [value == experiment_id for value in self.restricted.values] + [True], dtype=bool
        )
        return self.restricted.lookup(allowed)


@dataclass(frozen=True)
class GoalEvents:
    """The counted events of one goal (before query filters), one row per event."""

    visitor: Codes
    time_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]  # NaN without revenue
    visit: Column
    source: EventRows
    rows: Codes  # the events' rows in ``source``
    _attributes: dict[str, Column] = field(default_factory=dict)

    def attribute(self, key: str) -> Column:
        """An event attribute as a column (``revenue``/``currency`` fall back to fields)."""
        if key not in self._attributes:
            self._attributes[key] = self.source.attribute(key).take(self.rows)
        return self._attributes[key]


@dataclass(frozen=True)
class VisitorTable:
    """Columns of one experiment's visitors; build once, query many times."""

    experiment_id: str
    visitor_ids: Sequence[str] | None  # None: not read (no query of the table needs them)
    variants: Column
    entry_ms: npt.NDArray[np.int64]
    hours: Codes
    multiple_exposure: Mask
    visit_visitor: Codes
    visit_hours: Codes
    contexts: Column  # the extended contexts (mappings)
    events: EventRows
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
        context_rows: list[int] = []
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
            context = visitor.get("context")
            if context:
                context_rows.append(len(contexts))
                contexts.append(context)
            else:
                context_rows.append(-1)
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
            contexts=Column(np.array(context_rows, dtype=np.int64), list(contexts)),
            events=EventRows.from_records(goals),
            counted_before_ms=counted_before_ms,
            cells=encode(cells, count),
            rules=rules,
        )

    @classmethod
    def from_columns(
        cls,
        experiment_id: str,
        stored: StoredColumns,
        counted_before_ms: int | None = None,
        rules: ExperimentRules | None = None,
    ) -> VisitorTable:
        """The table of the columnar visitor store (``visitor_columns``), with
        ``build``'s ``counted_before_ms`` and ``rules``; JSON is parsed once per
        distinct text."""
        count = stored.entry_ms.size
        exposures = stored.fact_hour == MULTIPLE_EXPOSURE
        multiple = np.zeros(count, dtype=bool)
        multiple[stored.fact_row[exposures]] = True
        visits = ~exposures
        return cls(
            experiment_id=experiment_id,
            visitor_ids=stored.visitor_ids,
            variants=_column(stored.variant),
            entry_ms=stored.entry_ms,
            hours=stored.entry_ms // MS_PER_HOUR,
            multiple_exposure=multiple,
            visit_visitor=stored.fact_row[visits],
            visit_hours=stored.fact_hour[visits],
            contexts=_column(stored.context, orjson.loads),
            events=EventRows(
                visitor=stored.event_row,
                goal=_column(stored.event_goal),
                time_ms=stored.event_time_ms,
                value=stored.event_value,
                visit=stored.event_visit,
                restricted=_column(stored.event_restricted),
                held=np.zeros(stored.event_row.size, dtype=bool),
                attributes=_column(stored.event_attributes, orjson.loads),
                currency=_column(stored.event_currency),
            ),
            counted_before_ms=counted_before_ms,
            cells=_column(stored.cell),
            rules=rules,
        )

    @property
    def size(self) -> int:
        return int(self.entry_ms.size)

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
            elif field == "visitor_id":
                if self.visitor_ids is None:
                    raise KeyError("the table was read without visitor ids")
                column = distinct_column(self.visitor_ids)
            else:
                column = derive(self.contexts, _context_getter(field, key))
            self._columns[field, key] = column
        return self._columns[field, key]

    def _cell_column(self, field: str) -> Column:
        """One dimension of the cell text, split once per distinct cell."""
        return derive(self.cells, lambda cell: getattr(SegmentCell.parse(str(cell)), field))

    def _raw_column(self, field: str) -> Column:
        """The producer's text of a cell field: the context's ``raw`` text where the
        value was counted as ``other`` for naming no known value, else the cell's value."""
        name = field.removesuffix("_raw")
        counted = self.stored_column(name, None)
        texts = derive(
            self.contexts,
            lambda context: (cast(Mapping[str, Any], context).get("raw") or _EMPTY).get(name),
        )
        if not (texts.codes >= 0).any():
            return counted
        merged = encode([*texts.values, *counted.values], len(texts.values) + len(counted.values))
        from_texts = np.append(merged.codes[: len(texts.values)], -1)
        from_counted = np.append(merged.codes[len(texts.values) :], -1)
        codes = np.where(texts.codes >= 0, texts.lookup(from_texts), counted.lookup(from_counted))
        return Column(codes, merged.values)

    def reference_ms(self) -> npt.NDArray[np.float64]:
        return self.entry_ms.astype(np.float64, copy=False)

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
        events = self.events
        entry = self.entry_ms[events.visitor]
        chosen = (
            self._of_goal(goal)
            & (entry - window <= events.time_ms)
            & (events.time_ms < entry)
            & ~events.held
            & events.may_count_for(self.experiment_id)
        )
        visitor = events.visitor[chosen]
        counts = np.bincount(visitor, minlength=self.size).astype(np.float64, copy=False)
        revenue = np.bincount(
            visitor, weights=np.nan_to_num(events.value[chosen]), minlength=self.size
        ).astype(np.float64, copy=False)
        return _on_scale(rule, counts, revenue, converted=counts > 0)

    def _of_goal(self, goal: str) -> Mask:
        return self.events.goal.lookup(
            np.array([value == goal for value in self.events.goal.values] + [False], dtype=bool)
        )

    def _flatten(self, goal: str) -> GoalEvents:
        events = self.events
        chosen = (
            self._of_goal(goal)
            & (events.time_ms >= self.entry_ms[events.visitor])
            & events.may_count_for(self.experiment_id)
        )
        if self.counted_before_ms is not None:
            chosen &= events.time_ms < self.counted_before_ms
        rows = np.flatnonzero(chosen)
        visits, visit_codes = np.unique(events.visit[rows], return_inverse=True)
        return GoalEvents(
            visitor=events.visitor[rows],
            time_ms=events.time_ms[rows],
            value=events.value[rows],
            visit=Column(visit_codes.reshape(-1).astype(np.int64), visits.tolist()),
            source=events,
            rows=rows,
        )


def _column(interned: Interned, parse: Callable[[str], object] | None = None) -> Column:
    """A stored column of interned strings, each distinct text parsed once."""
    values = interned.values if parse is None else [parse(text) for text in interned.values]
    return Column(interned.codes, list(values))


def _context_getter(field: str, key: str | None) -> Callable[[object], object]:
    """How to read ``field`` (with ``key``) from an extended context."""
    if field in CONTEXT_FIELDS:
        return lambda context: cast(Mapping[str, Any], context).get(field)
    if field in UTM_FIELDS:
        name = field.removeprefix("utm_")
        return lambda context: (cast(Mapping[str, Any], context).get("utm") or _EMPTY).get(name)
    container = {"query_param": "query_params", "attribute": "attributes"}[field]
    return lambda context: (cast(Mapping[str, Any], context).get(container) or _EMPTY).get(
        cast(str, key)
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
    counts = np.bincount(events.visitor[matching], minlength=size).astype(np.float64, copy=False)
    paid = matching & ~np.isnan(events.value)
    orders = np.bincount(events.visitor[paid], minlength=size).astype(np.float64, copy=False)
    revenue: npt.NDArray[np.float64] = np.bincount(
        events.visitor[paid], weights=events.value[paid], minlength=size
    ).astype(np.float64, copy=False)
    converted = counts >= query.min_count
    converting = matching & converted[events.visitor]
    visit_count = len(events.visit.values)
    pairs = _distinct(events.visitor[converting] * visit_count + events.visit.codes[converting])
    converted_visits = np.bincount(pairs // max(visit_count, 1), minlength=size).astype(
        np.float64, copy=False
    )
    rule = table.goal_rule(goal)
    if rule is not None and "cap" in rule:
        # The sink caps the value it counts; conversions and orders stay as they are.
        if rule["kind"] == "count":
            counts = np.minimum(counts, rule["cap"])
        elif rule["kind"] == "revenue":
            revenue = np.minimum(revenue, rule["cap"])
    visits = np.bincount(table.visit_visitor, minlength=size).astype(np.float64, copy=False)
    total = groups.over(cohort)
    sums = {
        "conversions": groups.sum(cohort & converted),
        "converted_visits": total(converted_visits),
        "goal_events": total(counts),
        "goal_events_sum_squares": total(counts * counts),
        "orders": total(orders),
        "revenue": total(revenue),
        "revenue_sum_squares": total(revenue * revenue),
        "cohort_visits": total(visits),
        "cohort_visits_sum_squares": total(visits * visits),
        "converted_visits_sum_squares": total(converted_visits * converted_visits),
        "visits_converted_visits_product": total(visits * converted_visits),
        "visits_goal_events_product": total(visits * counts),
        "visits_revenue_product": total(visits * revenue),
        "orders_sum_squares": total(orders * orders),
        "revenue_orders_product": total(revenue * orders),
    }
    covariate = table.covariate(goal)
    if covariate is not None and rule is not None:
        outcome = _on_scale(rule, counts, revenue, converted)
        sums["covariate_sum"] = total(covariate)
        sums["covariate_sum_squares"] = total(covariate * covariate)
        sums["covariate_product_sum"] = total(covariate * outcome)
    return sums


def _distinct(values: Codes) -> Codes:
    """The distinct values, sorted (np.unique's hash table is several times slower on
    a few hundred thousand integers)."""
    ordered = np.sort(values)
    return (
        ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if ordered.size else ordered
    )


def _on_scale(
    rule: GoalRule,
    counts: npt.NDArray[np.float64],
    revenue: npt.NDArray[np.float64],
    converted: Mask,
) -> npt.NDArray[np.float64]:
    """Per visitor, the goal's value on its kind's scale (converted 0/1, events or
    revenue), capped by the rule."""
    if rule["kind"] == "conversion":
        return converted.astype(np.float64, copy=False)
    value = counts if rule["kind"] == "count" else revenue
    return np.minimum(value, rule["cap"]) if "cap" in rule else value

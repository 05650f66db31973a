"""The result query of one experiment, shared by the CLI, the snapshots and the read API.

A query names the cohort (entry date range in a timezone), the goal, a segment filter,
an optional breakdown and how conversions are counted. It is plain validated data:
frozen and hashable, so answers can be cached under it.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.events.enums import ENUMERATED_CONTEXT, VisitorType
from worker.events.experiment import ExperimentDefinition
from worker.events.segment_cell import SegmentCell

HOURS_PER_DAY = 24
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

CELL_FIELDS = SegmentCell._fields
"""The segment-cell dimensions: counters answer them exactly."""

TIME_FIELDS = ("day_of_week", "hour_of_day")
"""Derived from a row's hour bucket in the query's timezone; 0 = Monday, as in Mida."""

UTM_FIELDS = ("utm_campaign", "utm_source", "utm_medium", "utm_content", "utm_term")
CONTEXT_FIELDS = (
    "region", "city", "landing_page", "ref_page", "user_agent", "sdk", "timezone",
    "first_seen_at",
)  # fmt: skip
KEYED_FIELDS = ("query_param", "attribute")
"""Fields that need a ``key``: one query parameter or one visitor attribute."""

RAW_FIELDS = ("device_raw", "browser_raw", "os_raw", "source_raw")
"""The producer's text of an enumerated cell field (visitor scan only): the text a
value outside the vocabulary was sent as (counted as ``other`` in the cell), else the
counted value itself."""

FIXED_VALUES: dict[str, tuple[str, ...]] = {
    **{
        name: tuple(member.value for member in vocabulary)
        for name, vocabulary in ENUMERATED_CONTEXT.items()
    },
    "visitor_type": tuple(member.value for member in VisitorType),
    "day_of_week": tuple(str(day) for day in range(7)),
    "hour_of_day": tuple(str(hour) for hour in range(HOURS_PER_DAY)),
}
"""Every value a field with a closed vocabulary can hold (lower case; time fields as
whole numbers, 0 = Monday)."""

FilterField = Literal[
    "device", "browser", "os", "country", "visitor_type", "source",
    "day_of_week", "hour_of_day",
    "region", "city", "landing_page", "ref_page", "user_agent", "sdk", "timezone",
    "first_seen_at", "visitor_id",
    "utm_campaign", "utm_source", "utm_medium", "utm_content", "utm_term",
    "query_param", "attribute",
    "device_raw", "browser_raw", "os_raw", "source_raw",
]  # fmt: skip

Dimension = Literal[
    "device", "browser", "os", "country", "visitor_type", "source",
    "day_of_week", "hour_of_day",
    "region", "city", "landing_page", "ref_page", "sdk", "timezone",
    "utm_campaign", "utm_source", "utm_medium", "utm_content", "utm_term",
    "device_raw", "browser_raw", "os_raw", "source_raw",
]  # fmt: skip
"""Breakdown dimensions; Mida's ``user_type`` is accepted as ``visitor_type``."""


def fixed_value(field: str, value: object) -> str | None:
    """``value`` as the member of ``field``'s closed vocabulary it names (case ignored,
    whole numbers for time fields), or None when it names none; fields without a
    closed vocabulary raise KeyError."""
    values = FIXED_VALUES[field]
    if isinstance(value, bool):
        return None
    text = str(value).strip().lower()
    if field in TIME_FIELDS:
        try:
            number = float(text)
        except ValueError:
            return None
        text = str(int(number)) if number.is_integer() else text
    return text if text in values else None


EventOperator = Literal[
    "==", "!=", "contains", "not_contains", "exists", "not_exists", ">", ">=", "<", "<=",
]  # fmt: skip
DAYS_OPERATORS = ("days_gt", "days_gte", "days_lt", "days_lte")
Operator = Literal[
    "==", "!=", "contains", "not_contains", "exists", "not_exists", ">", ">=", "<", "<=",
    "days_gt", "days_gte", "days_lt", "days_lte",
]  # fmt: skip
"""``days_*`` compare the days from a date-valued field to the visitor's entry."""

Value = Annotated[str, Field(max_length=500)] | float | int | bool
CountUnit = Literal["visitors", "visits"]
ConversionType = Literal["all", "converted_visits"]

_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_PRESENCE = ("exists", "not_exists")
_DATE_VALUED = ("attribute", "first_seen_at")


def _check_value(operator: str, value: Value | None, where: str) -> None:
    if operator in _PRESENCE:
        if value is not None:
            raise ValueError(f"{where}: operator {operator!r} takes no value")
    elif value is None:
        raise ValueError(f"{where}: operator {operator!r} needs a value")


class Condition(BaseModel):
    """One segment condition on a visitor: ``field`` (and ``key``) ``operator`` ``value``.

    String comparisons ignore case; ``>``-style operators compare numbers, or ISO dates
    when both sides are dates, and are false otherwise. A missing field satisfies only
    ``!=``, ``not_contains`` and ``not_exists``.
    """

    model_config = _FROZEN

    field: FilterField
    key: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    operator: Operator
    value: Value | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        where = f"condition on {self.field!r}"
        if (self.field in KEYED_FIELDS) != (self.key is not None):
            raise ValueError(f"{where}: a key is needed exactly for {', '.join(KEYED_FIELDS)}")
        if self.operator in DAYS_OPERATORS and self.field not in _DATE_VALUED:
            raise ValueError(f"{where}: {self.operator!r} applies to date-valued fields only")
        _check_value(self.operator, self.value, where)
        return self


class EventCondition(BaseModel):
    """One condition on a goal event's attribute (Mida's ``event_attribute``).

    The key ``revenue`` falls back to the event's value and ``currency`` to its
    currency when the attributes do not define them.
    """

    model_config = _FROZEN

    key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,80}$")]
    operator: EventOperator
    value: Value | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_value(self.operator, self.value, f"event condition on {self.key!r}")
        return self


OrGroup = tuple[Condition, ...]
SegmentFilter = tuple[OrGroup, ...]
"""AND of OR groups: every group needs at least one of its conditions to hold."""

AndGroup = tuple[EventCondition, ...]
EventFilter = tuple[AndGroup, ...]
"""OR of AND groups: an event counts when all conditions of any one group hold."""


class ResultQuery(BaseModel):
    """Everything that selects and shapes the numbers of one experiment's result.

    ``start_date``/``end_date`` select visitors by entry (visits by the hour of their
    first exposure) in the timezone ``tz`` (hours east of UTC), exact to the hour.
    ``goal`` None means the primary goal; ``reference_variant`` None the control.
    """

    model_config = _FROZEN

    start_date: date | None = None
    end_date: date | None = None
    tz: int = Field(default=0, ge=-12, le=14)
    goal: str | None = None
    segment: SegmentFilter = ()
    breakdown: Dimension | None = None
    min_count: int = Field(default=1, ge=1, le=1_000_000)
    timeframe_days: int | None = Field(default=None, ge=1, le=3650)
    event_filter: EventFilter = ()
    count_unit: CountUnit = "visitors"
    conversion_type: ConversionType = "all"
    reference_variant: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("breakdown") == "user_type":
            return {**data, "breakdown": "visitor_type"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError("start_date must not be after end_date")
        if any(not group for group in self.segment) or any(
            not group for group in self.event_filter
        ):
            raise ValueError("filter groups must not be empty")
        return self

    def hour_range(self) -> tuple[int | None, int | None]:
        """UTC hour buckets [first, end) covered by the dates; None for an open side.

        Day d in timezone +h starts at UTC hour (d·24 − h): local midnight is h hours
        before UTC midnight of the same date.
        """
        first = None if self.start_date is None else _day_hour(self.start_date) - self.tz
        end = None if self.end_date is None else _day_hour(self.end_date) + HOURS_PER_DAY - self.tz
        return first, end

    def goal_key(self, definition: ExperimentDefinition) -> str:
        """The queried goal, or the experiment's primary goal; unknown goals raise."""
        if self.goal is None:
            return definition.primary_goal.key
        if all(goal.key != self.goal for goal in definition.goals):
            raise ValueError(f"experiment {definition.id!r} has no goal {self.goal!r}")
        return self.goal

    def variant_order(self, definition: ExperimentDefinition) -> list[str]:
        """Variant ids with the reference first (the control unless overridden)."""
        reference = self.reference_variant or definition.control.id
        if definition.variant(reference) is None:
            raise ValueError(f"experiment {definition.id!r} has no variant {reference!r}")
        return [reference] + [v.id for v in definition.variants if v.id != reference]


def _day_hour(day: date) -> int:
    return (day.toordinal() - EPOCH_ORDINAL) * HOURS_PER_DAY

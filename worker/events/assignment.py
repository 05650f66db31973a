"""The assignment (exposure) event: a visitor was shown a variant of an experiment."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.events.enums import Browser, Device, OperatingSystem, Source, VisitorType
from worker.events.fields import (
    Attributes,
    AttributeValue,
    CountryCode,
    Identifier,
    LongText,
    ShortText,
    Timestamp,
    VisitorId,
)

NEW_VISITOR_WINDOW = timedelta(hours=24)
UNKNOWN_COUNTRY = "ZZ"


class Utm(BaseModel):
    """UTM campaign parameters of the landing URL."""

    model_config = ConfigDict(extra="forbid")

    campaign: ShortText | None = None
    source: ShortText | None = None
    medium: ShortText | None = None
    content: ShortText | None = None
    term: ShortText | None = None


class Context(BaseModel):
    """Where the visitor was when assigned: the segment dimensions of the design."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    device: Device = Device.OTHER
    browser: Browser = Browser.OTHER
    os: OperatingSystem = OperatingSystem.OTHER
    country: CountryCode | None = None
    region: ShortText | None = None
    city: ShortText | None = None
    landing_page: LongText | None = None
    ref_page: LongText | None = None
    user_agent: LongText | None = None
    source: Source = Source.OTHER
    utm: Utm | None = None
    query_params: dict[Identifier, AttributeValue] | None = Field(default=None, max_length=50)
    first_seen_at: Timestamp | None = None
    attributes: Attributes | None = None
    sdk: ShortText | None = None
    timezone: ShortText | None = None

    @field_validator("device", "browser", "os", "source", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        # Producers write "Chrome" or "iOS"; the vocabulary is lower case.
        return value.lower() if isinstance(value, str) else value


class Assignment(BaseModel):
    """Topic `ab.assignments`, key = visitor_id."""

    model_config = ConfigDict(extra="forbid")

    event_id: Identifier
    experiment_id: Identifier
    variant_id: Identifier
    visitor_id: VisitorId
    visit_id: Identifier | None = None
    timestamp: Timestamp
    context: Context = Field(default_factory=Context)

    def visitor_type(self) -> VisitorType:
        """`new` when first seen less than 24 hours before this entry; unknown counts as new."""
        first_seen: datetime | None = self.context.first_seen_at
        if first_seen is None or self.timestamp - first_seen < NEW_VISITOR_WINDOW:
            return VisitorType.NEW
        return VisitorType.RETURNING

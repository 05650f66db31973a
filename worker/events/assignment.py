"""The assignment (exposure) event: a visitor was shown a variant of an experiment."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema

from worker.events.enums import (
    ENUMERATED_CONTEXT,
    OTHER,
    Browser,
    Device,
    OperatingSystem,
    Source,
    VisitorType,
    known_value,
)
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
RAW_TEXT_CHARS = 200
"""How much of an unknown enumerated value's text is kept."""


class _OpenVocabulary:
    """JSON Schema of an enumerated field that takes any text: one of the known values
    (any case), or anything else, which is counted as `other`."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [handler(core_schema), {"type": "string"}],
            "description": (
                "One of the known values, in any case; any other text is counted as "
                f"`other` and its first {RAW_TEXT_CHARS} characters are kept for scans."
            ),
        }


_OPEN = _OpenVocabulary()


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

    device: Annotated[Device, _OPEN] = Device.OTHER
    browser: Annotated[Browser, _OPEN] = Browser.OTHER
    os: Annotated[OperatingSystem, _OPEN] = OperatingSystem.OTHER
    country: CountryCode | None = None
    region: ShortText | None = None
    city: ShortText | None = None
    landing_page: LongText | None = None
    ref_page: LongText | None = None
    user_agent: LongText | None = None
    source: Annotated[Source, _OPEN] = Source.OTHER
    utm: Utm | None = None
    query_params: dict[Identifier, AttributeValue] | None = Field(default=None, max_length=50)
    first_seen_at: Timestamp | None = None
    attributes: Attributes | None = None
    sdk: ShortText | None = None
    timezone: ShortText | None = None

    raw: SkipJsonSchema[dict[str, str] | None] = None
    """The producer's text of enumerated fields counted as `other` because it named no
    known value (device, browser, os, source), or None when there was none.

    Set by validation, never read from the input (a producer's `raw` is refused); it
    travels with the extended context to the visitor state, where scans and
    breakdowns find it.
    """

    @model_validator(mode="before")
    @classmethod
    def _unknown_text_is_other(cls, data: Any) -> Any:
        # Producers write "Chrome" or "iOS"; the vocabularies are lower case. Text that
        # names no known value counts as `other` and is kept; non-text stays invalid.
        # A plain function over the input (not a wrap validator with a private
        # attribute and a computed field): it runs for every assignment, and this way
        # costs about a microsecond when every value is known.
        if not isinstance(data, dict):
            return data
        normalised: dict[str, Any] | None = None
        unknown: dict[str, str] | None = None
        for name, vocabulary in ENUMERATED_CONTEXT.items():
            text = data.get(name)
            if not isinstance(text, str):
                continue
            known = known_value(vocabulary, text)
            if known is None:
                value = OTHER
                if text.strip():
                    unknown = unknown if unknown is not None else {}
                    unknown[name] = text[:RAW_TEXT_CHARS]
            else:
                value = known.value
            if value != text:
                normalised = normalised if normalised is not None else dict(data)
                normalised[name] = value
        # A producer's own `raw` is left in place for the field to refuse; ours is
        # marked, so that the field tells the two apart.
        if unknown is not None and "raw" not in data:
            normalised = normalised if normalised is not None else dict(data)
            normalised["raw"] = _ValidatedRaw(unknown)
        return normalised if normalised is not None else data

    @field_validator("raw", mode="before")
    @classmethod
    def _raw_is_set_by_validation(cls, value: Any) -> Any:
        if isinstance(value, _ValidatedRaw):
            return value.texts
        raise ValueError("raw is set by validation from unknown values, not by producers")


class _ValidatedRaw:
    """The unknown texts found by `Context._unknown_text_is_other`, marked as such."""

    __slots__ = ("texts",)

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts


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

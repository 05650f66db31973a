"""The assignment (exposure) event: a visitor was shown a variant of an experiment."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    PrivateAttr,
    computed_field,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
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

    _unknown: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _unknown_text_is_other(
        cls, data: Any, handler: ModelWrapValidatorHandler[Context]
    ) -> Context:
        # Producers write "Chrome" or "iOS"; the vocabularies are lower case. Text that
        # names no known value counts as `other` and is kept; non-text stays invalid.
        unknown: dict[str, str] = {}
        if isinstance(data, dict):
            normalised: dict[str, Any] | None = None
            for name, vocabulary in ENUMERATED_CONTEXT.items():
                text = data.get(name)
                if not isinstance(text, str):
                    continue
                known = known_value(vocabulary, text)
                if known is None and text.strip():
                    unknown[name] = text[:RAW_TEXT_CHARS]
                value = OTHER if known is None else known.value
                if value != text:
                    normalised = normalised if normalised is not None else dict(data)
                    normalised[name] = value
            data = normalised if normalised is not None else data
        context = handler(data)
        if unknown:
            context._unknown = unknown
        return context

    @computed_field  # type: ignore[prop-decorator]
    @property
    def raw(self) -> dict[str, str] | None:
        """The producer's text of enumerated fields counted as `other` because it named
        no known value (device, browser, os, source), or None when there was none.

        Set by validation, never read from the input; it travels with the extended
        context to the visitor state, where scans and breakdowns find it.
        """
        return dict(self._unknown) if self._unknown else None


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

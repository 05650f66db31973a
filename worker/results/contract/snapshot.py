"""A result snapshot: the default result of one interval, with when, by whom and as of what."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from worker.results.contract.document import CONTRACT, ResultDocument

IsoTime = Annotated[AwareDatetime, PlainSerializer(datetime.isoformat, when_used="json")]
"""A time with its offset, in JSON as Python's ``isoformat`` writes it (``+00:00``, not
pydantic's ``Z``): the text ab.results and ab.winners have always carried."""


class Snapshot(BaseModel):
    """Topic `ab.results` (compacted), key = experiment id; also stored in Redis for the API.

    One experiment's default result of one interval. It wraps the document, which is
    never changed after it was computed, with the metadata of the interval. On the
    wire the two are one flat object, the document's fields first, as consumers have
    always read it: the serializer, the validator and the JSON Schema all flatten it.
    """

    model_config = CONTRACT

    document: ResultDocument
    applied_offsets: dict[str, dict[str, int]] = Field(
        description="Input topic → partition → the last offset applied before the "
        "computation: every message at or below it is included."
    )
    computed_at: IsoTime
    interval_index: int = Field(
        description="The results interval (seconds since the epoch // interval), or the "
        "interval of the final snapshot of a completed experiment."
    )
    computed_by: str = Field(description="host:pid of the worker that computed it.")
    ended_at: IsoTime | None = Field(
        default=None,
        exclude_if=lambda ended: ended is None,
        description="Only in a completed experiment's final snapshot: when it ended.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any) -> Any:
        """Split the flat wire object into the document and the metadata."""
        if not isinstance(data, dict) or "document" in data:
            return data  # built in Python: Snapshot(document=..., ...)
        metadata = cls.model_fields.keys() - {"document"}
        return {
            "document": {name: value for name, value in data.items() if name not in metadata},
            **{name: value for name, value in data.items() if name in metadata},
        }

    @model_serializer(mode="wrap")
    def _to_flat(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        fields = serialize(self)
        return {**fields.pop("document"), **fields}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The flat wire object: the document's properties followed by the metadata's."""
        json_schema = handler(core_schema)
        snapshot = handler.resolve_ref_schema(json_schema)
        document = handler.resolve_ref_schema(snapshot["properties"].pop("document"))
        snapshot["properties"] = {**document["properties"], **snapshot["properties"]}
        snapshot["required"] = [
            *document["required"],
            *(name for name in snapshot["required"] if name != "document"),
        ]
        return json_schema

"""Constrained field types shared by the event and definition models."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, Field, StringConstraints

# Identifiers become parts of Redis keys and counter fields joined by ':' and '|',
# so neither character is allowed in them.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,80}$")]
VisitorId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,80}$")]
AttributeKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,80}$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=2048)]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$", to_upper=True)]
Timestamp = AwareDatetime
AttributeValue = Annotated[str, StringConstraints(max_length=500)] | float | int | bool
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=50)]

"""The conversion event: a visitor reached a goal, optionally with revenue."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from worker.events.fields import Attributes, Identifier, Timestamp, VisitorId


class Conversion(BaseModel):
    """Topic `ab.conversions`, key = visitor_id.

    Without `experiment_id` it counts for every experiment the visitor entered
    before `timestamp`; with it, only for that one.
    """

    model_config = ConfigDict(extra="forbid")

    event_id: Identifier
    visitor_id: VisitorId
    visit_id: Identifier | None = None
    goal: Identifier
    timestamp: Timestamp
    value: float | None = Field(default=None, ge=-1e12, le=1e12, allow_inf_nan=False)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    experiment_id: Identifier | None = None
    attributes: Attributes | None = None

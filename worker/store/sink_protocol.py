"""What crosses into the Lua batch script and back: its commands, outbox entries and reply.

apply_batch.lua reads each command by short keys (a batch of hundreds is JSON-encoded
per call, so the names are kept short); the planner (worker/ingestion/commands.py)
builds them, and these types are the contract between the two. Optional values are
left out, never null: cjson would turn null into a truthy value.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

# pydantic validates only typing_extensions' TypedDict on Python 3.11; these are
# plain types, but share the import with events/dead_letter.py's for one style.
from typing_extensions import TypedDict

from worker.events.dead_letter import DeadLetterEntry
from worker.events.experiment import ExperimentDefinition

_MS_PER_DAY = 86_400_000


class _Positioned(TypedDict):
    t: str
    """Source topic."""
    o: int
    """Offset: the script skips offsets it applied before."""
    p: int
    """Publish time in ms (the record timestamp): the hold's clock."""


class AssignmentCommand(_Positioned):
    """An assignment to apply (the visitor enters, or is exposed again)."""

    k: Literal["a"]
    id: str
    u: str
    """Visitor."""
    x: str
    """Experiment."""
    v: str
    """Variant."""
    ts: int
    """Event time in ms."""
    c: str
    """Segment cell text."""
    s: NotRequired[str]
    """Visit."""
    ctx: NotRequired[str]
    """Extended context JSON, kept for scans."""


class ConversionCommand(_Positioned):
    """A goal event to count for every experiment the visitor entered before it."""

    k: Literal["c"]
    id: str
    u: str
    g: str
    """Goal."""
    ts: int
    held: str
    """The original record (a SourceRecord with its goal, JSON), dead-lettered if it
    expires on hold."""
    x: NotRequired[str]
    """The only experiment it may count for."""
    s: NotRequired[str]
    val: NotRequired[str]
    """Revenue as text: cjson keeps only 14 significant digits of a number."""
    cur: NotRequired[str]
    at: NotRequired[dict[str, Any]]
    """Event attributes."""


class OutboxCommand(_Positioned):
    """A message that is not counted, only queued in the outbox: a dead letter (`d`) or
    a misrouted event forwarded to its partition (`f`)."""

    k: Literal["d", "f"]
    out: str
    """The outbox entry, JSON (a DeadLetterEntry or a ForwardEntry)."""


SinkCommand = AssignmentCommand | ConversionCommand | OutboxCommand


class GoalRule(TypedDict):
    """How the script counts one goal of an experiment (from its definition)."""

    kind: Literal["conversion", "revenue", "count"]
    cap: NotRequired[float]
    """Each visitor's revenue (revenue goals) or events (count goals) count as at most
    this much."""


class ExperimentRules(TypedDict):
    """How the script counts an experiment's goals; fixed once the experiment is live."""

    cuped_ms: int
    """CUPED covariate window before entry (0: no covariate)."""
    goals: dict[str, GoalRule]


def experiment_rules(definition: ExperimentDefinition) -> ExperimentRules:
    """How the sink counts the experiment's goals: their kinds, caps and CUPED window
    (the per-visitor scan counts by the same rules)."""
    goals: dict[str, GoalRule] = {}
    for goal in definition.goals:
        rule: GoalRule = {"kind": goal.type.value}
        if goal.cap is not None:
            rule["cap"] = goal.cap
        goals[goal.key] = rule
    return {"cuped_ms": definition.stats.cuped_days * _MS_PER_DAY, "goals": goals}


class ForwardEntry(TypedDict):
    """Outbox entry: publish a misrouted event again, to the partition of its visitor."""

    kind: Literal["forward"]
    topic: str
    partition: int
    key: str | None
    value: str | None
    """Base64, as the original bytes."""


class PublishEntry(TypedDict):
    """Outbox entry: publish `value` as JSON (a decision event) under `key`."""

    kind: Literal["publish"]
    topic: str
    key: str
    value: dict[str, Any]


OutboxEntry = DeadLetterEntry | ForwardEntry | PublishEntry


class SinkReply(TypedDict, total=False):
    """What one script call did, or, alone, `rollback`: topic -> the offset Redis holds,
    behind what the caller expected (nothing was applied), or `legacy_layout`: the
    partition holds visitor state of the layout with a key per visitor (nothing was
    applied; BatchSink raises)."""

    applied: int
    replayed: int
    duplicates: int
    dead_lettered: int
    forwarded: int
    conversions_held: int
    conversions_expired: int
    outbox: int
    rollback: dict[str, int]
    legacy_layout: bool

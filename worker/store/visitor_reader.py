"""Reads the per-visitor state of one experiment (for queries counters cannot answer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, Required, TypedDict

import orjson

from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count

CHUNK = 2000


class GoalEventRecord(TypedDict, total=False):
    """One stored goal event: the JSON of a visitor hash's ``kG:{n}`` field."""

    t: Required[int]  # event time, epoch ms
    v: str  # revenue, as text
    x: str  # the only experiment it may count for
    s: str  # visit id
    a: Mapping[str, Any]  # event attributes
    c: str  # currency, when the sink stores it


class VisitorState(TypedDict):
    """One entered visitor of the experiment, as read from its visitor hash.

    apply_batch.lua names the experiment and the goals by their positions X and G in the
    hash's ``kx`` and ``kg`` fields. ``variant`` and ``entry_ms`` come from ``eX``
    ("variant|entry_ms|cell_id|clock"), ``cell`` is the text of that cell id
    (``SegmentCell.text``, or its six values); ``context`` is the extended context (``xX``, whose
    ``raw`` holds the text of enumerated values counted as ``other``); ``visits`` maps
    visit id → first-exposure hour (``vX:{visit}``; absent: one visit at the entry
    hour); ``multiple_exposure`` is whether ``mX`` exists; ``goals`` maps goal → its
    ``kG:{n}`` records in n order.
    """

    visitor_id: str
    variant: str
    entry_ms: int
    cell: str | Sequence[str]
    context: NotRequired[Mapping[str, Any]]
    visits: NotRequired[Mapping[str, int]]
    multiple_exposure: NotRequired[bool]
    goals: NotRequired[Mapping[str, Sequence[GoalEventRecord]]]


async def read_visitor_states(redis: Redis, prefix: str, experiment_id: str) -> list[VisitorState]:
    """Every entered visitor of the experiment, parsed from its visitor hash, partition
    by partition in entry order.

    Each round trip reads up to CHUNK visitors of every partition: on a Redis Cluster
    the client sends each node its partitions' share at once.
    """
    partitions = await partition_count(redis, prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.lrange(keys.entrants_key(prefix, partition, experiment_id), 0, -1)
        entrants = [[_text(raw) for raw in listed] for listed in await pipe.execute()]
    states: list[list[VisitorState]] = [[] for _ in range(partitions)]
    for start in range(0, max(map(len, entrants), default=0), CHUNK):
        chunks = [
            (partition, visitors[start : start + CHUNK])
            for partition, visitors in enumerate(entrants)
            if len(visitors) > start
        ]
        async with redis.pipeline(transaction=False) as pipe:
            for partition, chunk in chunks:
                for visitor in chunk:
                    pipe.hgetall(keys.visitor_key(prefix, partition, visitor))
                # After the visitors (one slot: one node, in this order): the sink may
                # intern a cell while we read, and ids are only ever added, so this
                # names every id the chunk refers to.
                pipe.hgetall(keys.cells_key(prefix, partition))
            replies = iter(await pipe.execute())
        for partition, chunk in chunks:
            hashes = [next(replies) for _ in chunk]
            cells = next(replies)
            cell_texts = {_bytes(cell_id): _text(text) for text, cell_id in cells.items()}
            for visitor, fields in zip(chunk, hashes, strict=True):
                state = parse_visitor(visitor, experiment_id, fields, cell_texts)
                if state is not None:
                    states[partition].append(state)
    return [state for partition_states in states for state in partition_states]


def parse_visitor(
    visitor_id: str, experiment_id: str, fields: dict[bytes, bytes], cell_texts: dict[bytes, str]
) -> VisitorState | None:
    """One visitor hash (see apply_batch.lua) -> the scan's VisitorState.

    ``cell_texts`` maps the partition's cell ids to cell texts (``keys.cells_key``).
    Fields name the experiment and goals by their 1-based position in ``kx`` and ``kg``.
    """
    entered = fields.get(b"kx", b"").split(b",")
    if experiment_id.encode() not in entered:
        return None
    number = entered.index(experiment_id.encode()) + 1
    # "variant|entry_ms|cell_id|clock"; entries written before the clock was kept lack it
    variant, entry_ms, cell_id = fields[b"e%d" % number].split(b"|")[:3]
    state: VisitorState = {
        "visitor_id": visitor_id,
        "variant": variant.decode(),
        "entry_ms": int(entry_ms),
        "cell": cell_texts[cell_id],
    }
    context = fields.get(b"x%d" % number)
    if context is not None:
        state["context"] = orjson.loads(context)
    visit_prefix = b"v%d:" % number
    # kG:{n}, the n-th event of goal G: listed in n order
    goal_names = (
        [item.rpartition(b":")[0].decode() for item in fields[b"kg"].split(b",")]
        if b"kg" in fields
        else []
    )
    numbered: dict[str, list[tuple[int, Any]]] = {}
    visits: dict[str, int] = {}
    for name, value in fields.items():
        if name.startswith(visit_prefix):
            visits[name[len(visit_prefix) :].decode()] = int(value)
        elif name[:1] == b"k" and name[1:2].isdigit():
            goal_number, _, event_number = name[1:].partition(b":")
            goal = goal_names[int(goal_number) - 1]
            numbered.setdefault(goal, []).append((int(event_number), orjson.loads(value)))
    if visits:
        state["visits"] = visits
    if numbered:
        state["goals"] = {
            goal: [record for _, record in sorted(records, key=lambda item: item[0])]
            for goal, records in numbered.items()
        }
    state["multiple_exposure"] = b"m%d" % number in fields
    return state


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()

"""Reads the per-visitor state of one experiment (for queries counters cannot answer)."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from worker.results.visitor_scan import VisitorState
from worker.store import keys
from worker.store.counter_reader import partition_count

CHUNK = 2000


async def read_visitor_states(redis: Redis, prefix: str, experiment_id: str) -> list[VisitorState]:
    """Every entered visitor of the experiment, parsed from its visitor hash."""
    partitions = await partition_count(redis, prefix)
    states: list[VisitorState] = []
    for partition in range(partitions):
        visitors = await redis.lrange(keys.entrants_key(prefix, partition, experiment_id), 0, -1)
        for start in range(0, len(visitors), CHUNK):
            chunk = [_text(raw) for raw in visitors[start : start + CHUNK]]
            async with redis.pipeline(transaction=False) as pipe:
                for visitor in chunk:
                    pipe.hgetall(keys.visitor_key(prefix, partition, visitor))
                replies = await pipe.execute()
            for visitor, fields in zip(chunk, replies, strict=True):
                state = parse_visitor(visitor, experiment_id, fields)
                if state is not None:
                    states.append(state)
    return states


def parse_visitor(
    visitor_id: str, experiment_id: str, fields: dict[bytes, bytes]
) -> VisitorState | None:
    """One visitor hash (see apply_batch.lua) -> the scan's VisitorState."""
    entry = fields.get(f"e:{experiment_id}".encode())
    if entry is None:
        return None
    variant, entry_ms, cell = entry.decode().split("|", 2)
    state: VisitorState = {
        "visitor_id": visitor_id,
        "variant": variant,
        "entry_ms": int(entry_ms),
        "cell": cell,
    }
    context = fields.get(f"x:{experiment_id}".encode())
    if context is not None:
        state["context"] = orjson.loads(context)
    visit_prefix = f"vs:{experiment_id}:".encode()
    goals: dict[str, Any] = {}
    visits: dict[str, int] = {}
    for name, value in fields.items():
        if name.startswith(visit_prefix):
            visits[name[len(visit_prefix) :].decode()] = int(value)
        elif name.startswith(b"k:"):
            goals[name[2:].decode()] = orjson.loads(value)
    if visits:
        state["visits"] = visits
    if goals:
        state["goals"] = goals
    state["multiple_exposure"] = f"m:{experiment_id}".encode() in fields
    return state


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw

"""The quixstreams contender of bench/ingestion.py: the same counting in a quixstreams app.

    .venv-quix/bin/python bench/quix_contender.py BROKER GROUP STATE_DIR TOTAL OUT.json \
        ASSIGNMENTS_TOPIC CONVERSIONS_TOPIC

Runs under its own interpreter (bench/requirements-quix.lock: quixstreams pins another
pydantic than requirements.lock), so it imports nothing of ours. One Application with
processing_guarantee="exactly-once" and its default RocksDB state (backed by changelog
topics) reads both input topics from the start, counts the events, stops after TOTAL of
them, then reads its totals back from the RocksDB stores and writes them, with its
timings, to OUT.json.

The two input topics are keyed by visitor id with Kafka's murmur2 partitioner and have
the same partition count, so partition p of both holds the same visitors. `concat` of
the two topics' dataframes makes one stream whose state store partition p is shared by
partition p of both topics (quixstreams assigns a store partition per partition number
of a multi-topic stream), so no re-keying is needed; quixstreams also consumes the two
topics aligned on record timestamps.

Counting, as the worker does it (DESIGN.md section 3), in state keyed by visitor:
* the first assignment to an experiment wins (variant and entry time kept); a visitor
  entering adds one to the variant's visitors;
* a conversion (de-duplicated by event_id) counts for each experiment the visitor
  entered at or before its timestamp (only the named one when it names one): one goal
  event, its value to revenue, and one converted visitor the first time;
* a conversion that counts for no entry yet is kept and applied when the entry comes
  (without the worker's hold deadline and dead-lettering: the bench has no orphans).
Totals live in the same RocksDB transaction as the visitor state, under one reserved
prefix per store partition, like the worker's running totals under a partition tag.
Reaching that prefix uses the state's transaction, which quixstreams keeps private
(it scopes State to the message key); the version is pinned.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.state.metadata import SEPARATOR
from quixstreams.state.rocksdb import RocksDBStorePartition

TOTALS = b"\x00bench-totals"  # no visitor id (1-80 chars of [A-Za-z0-9_-]) is this prefix


def _add(totals: Any, key: str, deltas: list[float]) -> None:
    current = totals.get(key) or [0] * len(deltas)
    totals.set(key, [a + b for a, b in zip(current, deltas, strict=True)])


def _counts_for(conversion: dict[str, Any], experiment: str, entered_at: str) -> bool:
    restricted = conversion.get("experiment_id")
    if restricted is not None and restricted != experiment:
        return False
    return datetime.fromisoformat(entered_at) <= datetime.fromisoformat(conversion["timestamp"])


def _convert(state: Any, totals: Any, conversion: dict[str, Any], experiment: str, variant: str) -> None:  # fmt: skip
    goal = conversion["goal"]
    first = state.get(f"converted:{experiment}:{goal}") is None
    if first:
        state.set(f"converted:{experiment}:{goal}", 1)
    # converted visitors, goal events, revenue
    _add(totals, f"goal:{experiment}:{variant}:{goal}", [int(first), 1, conversion.get("value") or 0.0])  # fmt: skip


def count(event: dict[str, Any], state: Any) -> None:
    """Apply one assignment or conversion to the visitor's state and the partition's totals."""
    totals = state._transaction.as_state(prefix=TOTALS)
    entries: dict[str, list[str]] = state.get("entries") or {}
    if "experiment_id" in event and "goal" not in event:
        experiment = event["experiment_id"]
        if experiment in entries:
            return  # the first assignment wins
        variant, entered_at = event["variant_id"], event["timestamp"]
        entries[experiment] = [variant, entered_at]
        state.set("entries", entries)
        _add(totals, f"visitors:{experiment}:{variant}", [1])
        pending: list[dict[str, Any]] = state.get("pending") or []
        if pending:
            kept = []
            for conversion in pending:
                if _counts_for(conversion, experiment, entered_at):
                    _convert(state, totals, conversion, experiment, variant)
                else:
                    kept.append(conversion)
            state.set("pending", kept)
        return
    if state.get(f"id:{event['event_id']}") is not None:
        return  # the producer sent this conversion twice
    state.set(f"id:{event['event_id']}", 1)
    counted = False
    for experiment, (variant, entered_at) in entries.items():
        if _counts_for(event, experiment, entered_at):
            _convert(state, totals, event, experiment, variant)
            counted = True
    if not counted:
        state.set("pending", [*(state.get("pending") or []), event])


def read_totals(state_dir: Path) -> dict[str, list[float]]:
    """Sum the totals of every store partition the app left in `state_dir`.

    quixstreams lays them out as GROUP/STORE/STREAM_ID/PARTITION.
    """
    summed: dict[str, list[float]] = {}
    start = TOTALS + SEPARATOR
    for path in sorted(state_dir.glob("*/default/*/*")):
        if not path.is_dir():
            continue
        partition = RocksDBStorePartition(str(path))
        try:
            # Keys are found by a range scan; values are read through the transaction,
            # which undoes quixstreams' own value encoding.
            names = [
                json.loads(raw[len(start) :])
                for raw, _ in partition.iter_items(lower_bound=start, upper_bound=start + b"\xff")
            ]
            totals = partition.begin().as_state(prefix=TOTALS)
            for name in names:
                value = totals.get(name)
                summed[name] = [a + b for a, b in zip(summed.get(name, [0] * len(value)), value, strict=True)]  # fmt: skip
        finally:
            partition.close()
    return summed


def main() -> None:
    broker, group, state_dir, total, out, *topics = sys.argv[1:]
    target = int(total)
    app = Application(
        broker_address=broker,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    assignments, conversions = (app.dataframe(app.topic(name)) for name in topics)
    stream = assignments.concat(conversions)
    seen = 0
    first = last = 0.0

    def timed(event: dict[str, Any], state: Any) -> None:
        nonlocal seen, first, last
        count(event, state)
        seen += 1
        if seen == 1:
            first = time.perf_counter()
        if seen == target:
            last = time.perf_counter()

    stream.update(timed, stateful=True)
    app.run(count=target, collect=False)
    stopped = time.perf_counter()
    totals = read_totals(Path(state_dir))
    Path(out).write_text(
        json.dumps(
            {
                "processed": seen,
                "seconds_to_last": last - first,
                "seconds_to_stopped": stopped - first,
                "totals": totals,
            }
        )
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()

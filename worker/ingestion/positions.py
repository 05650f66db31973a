"""Where the consumer stands in each input partition, so that a Redis roll-back shows.

Redis is the truth of what was applied (DESIGN.md section 4). When it loses writes
(restored from a snapshot, a replica promoted after a failover, `appendfsync everysec`
after a power cut), its applied offsets fall behind what this consumer applied or was
positioned after. The sink script compares the two before it writes anything; a
partition found behind is not applied, and the engine seeks back to Redis's offset + 1,
so the lost range is read again instead of being skipped for good.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from worker.ingestion.commands import SourceMessage

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]

ROLLBACK_CHECK_SECONDS = 1.0
"""How often an idle engine asks Redis whether it still holds what was applied: a
partition that receives records finds a roll-back with its next batch anyway."""


@dataclass(frozen=True)
class Rewind:
    """Seek `topic`/`partition` to `offset`: its records from there are to be read again.

    `applied` is the offset Redis holds for it (None: unknown), which the positions
    take once the seek is made; `lost` is how many offsets Redis had lost (0 when the
    records are only read again because the batch holding them was set aside).
    """

    topic: str
    partition: int
    offset: int
    applied: int | None
    lost: int = 0


@dataclass(frozen=True)
class BatchSpan:
    """What a batch covers per topic-partition, and where the consumer stood before it."""

    first: dict[TopicPartition, int]
    last: dict[TopicPartition, int]
    before: dict[TopicPartition, int | None]

    def expected(self, partition: int) -> dict[str, int]:
        """Topic -> the offset Redis must hold (at least) before this batch's records."""
        return {
            topic: offset
            for (topic, number), offset in self.before.items()
            if number == partition and offset is not None
        }


class ReadPositions:
    """Per topic-partition: the offset applied last, or the one the consumer was sought after.

    Batches are spanned (`span`) when they are planned, which may be before the
    previous batch has been applied: a batch set aside (`set_aside`) or rolled back
    (`roll_back`) puts the positions back to where that batch started.
    """

    def __init__(self) -> None:
        self._last: dict[TopicPartition, int] = {}
        # What Redis is known to hold: positioned after, or applied (not only planned).
        self._applied: dict[TopicPartition, int] = {}

    def span(self, messages: Iterable[SourceMessage]) -> BatchSpan:
        """Record a batch (each partition's records in offset order) and move past it."""
        first: dict[TopicPartition, int] = {}
        last: dict[TopicPartition, int] = {}
        for message in messages:
            key = (message.topic, message.partition)
            first.setdefault(key, message.offset)
            last[key] = message.offset
        before = {key: self._last.get(key) for key in first}
        self._last.update(last)
        return BatchSpan(first, last, before)

    def applied(self, span: BatchSpan, rewound: Iterable[int] = ()) -> None:
        """The batch was applied, except the partitions `rewound`."""
        skipped = set(rewound)
        for key, offset in span.last.items():
            if key[1] not in skipped:
                self._applied[key] = offset

    def known_applied(self) -> dict[TopicPartition, int]:
        """Topic-partition -> the offset Redis must hold at least, as far as this consumer knows."""
        return dict(self._applied)

    def sought(self, topic: str, partition: int, applied: int | None) -> None:
        """The consumer was positioned after `applied` (None: no offset is known)."""
        if applied is None:
            self._last.pop((topic, partition), None)
            self._applied.pop((topic, partition), None)
        else:
            self._last[(topic, partition)] = applied
            self._applied[(topic, partition)] = applied

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: a new assignment positions them again."""
        for key in partitions:
            self._last.pop(key, None)
            self._applied.pop(key, None)

    def reposition(self, rewinds: Iterable[Rewind]) -> None:
        """The engine made these seeks, in this order (a later one for the same partition wins)."""
        for rewind in rewinds:
            self.sought(rewind.topic, rewind.partition, rewind.applied)


def set_aside(span: BatchSpan) -> list[Rewind]:
    """A batch that will not be applied: seeks that read its records again."""
    return [
        Rewind(topic, partition, offset, span.before[(topic, partition)])
        for (topic, partition), offset in span.first.items()
    ]


def roll_back(span: BatchSpan, partition: int, stored: Mapping[str, int]) -> list[Rewind]:
    """Redis holds only `stored` (topic -> offset) of `partition`, behind this batch's start.

    Every topic of the partition goes back: the rolled-back ones to Redis's offset + 1,
    the others to the batch's first record (the atomic call applied none of them).
    """
    rewinds = []
    for rewind in set_aside(span):
        if rewind.partition != partition:
            continue
        if rewind.topic in stored:
            applied = stored[rewind.topic]
            lost = rewind.applied - applied if rewind.applied is not None else 0
            rewind = Rewind(rewind.topic, partition, applied + 1, applied, lost)
        rewinds.append(rewind)
    return rewinds


def resume_at(topic: str, partition: int, applied: int | None, committed: int | None) -> int | None:
    """Where an assigned partition is read from: after what Redis applied, or None to
    keep Kafka's committed position (only where Redis has no offset). A committed offset
    ahead of Redis's is a roll-back, and is logged with its size."""
    if applied is None:
        return None
    if committed is not None and committed > applied + 1:
        log.warning(
            "Redis rolled back: %s[%d] holds offset %d but offset %d was committed; "
            "reading the %d lost offsets again",
            topic,
            partition,
            applied,
            committed - 1,
            committed - 1 - applied,
        )
    return applied + 1


def warn_lost(rewinds: Iterable[Rewind]) -> None:
    """Log each roll-back found while running, with what is read again."""
    for rewind in rewinds:
        if rewind.lost:
            log.warning(
                "Redis rolled back: %s[%d] holds offset %d, %d behind what was applied; "
                "reading again from offset %d",
                rewind.topic,
                rewind.partition,
                rewind.offset - 1,
                rewind.lost,
                rewind.offset,
            )

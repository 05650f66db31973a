"""Kafka's default partitioner, which co-partitioning of the input topics relies on."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


# aiokafka's murmur2 is pure Python (about 4 us a key, an eighth of the cost of planning
# an event) and a visitor's events arrive close together, so recent keys are remembered.
@lru_cache(maxsize=1 << 17)
def partition_for(visitor_id: str, partitions: int) -> int:
    """The partition Java, aiokafka and kafkajs producers pick for this key."""
    return (murmur2(visitor_id.encode()) & 0x7FFFFFFF) % partitions

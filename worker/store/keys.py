"""The Redis key layout (DESIGN.md section 4).

Everything written for Kafka partition p carries the hash tag {p}: one Lua call can
then update visitor state, counters and the partition's applied offsets atomically,
and the layout stays valid on Redis Cluster (one slot per partition).
"""

from __future__ import annotations


def partition_base(prefix: str, partition: int) -> str:
    """The common start of every key of one partition; the Lua script builds the rest."""
    return f"{prefix}:{{{partition}}}"


def offsets_key(prefix: str, partition: int) -> str:
    """Hash topic -> last applied offset of this partition."""
    return f"{partition_base(prefix, partition)}:off"


def counters_key(prefix: str, partition: int, experiment_id: str, hour: int) -> str:
    """Hash of one hour's counters: `{cell_id}:{variant}[:{goal}]` -> packed metrics.

    apply_batch.lua documents the packing; `cells_key` maps cell ids to cells.
    """
    return f"{partition_base(prefix, partition)}:c:{experiment_id}:{hour}"


def counter_hours_key(prefix: str, partition: int, experiment_id: str) -> str:
    """Set of the hours (since the epoch) that have a counters hash."""
    return f"{partition_base(prefix, partition)}:ch:{experiment_id}"


def cells_key(prefix: str, partition: int) -> str:
    """Hash segment cell text (`device|browser|os|country|visitor_type|source`) -> id.

    Also holds `#`, the last id given. Shared by the partition's experiments.
    """
    return f"{partition_base(prefix, partition)}:cells"


def visitor_key(prefix: str, partition: int, visitor_id: str) -> str:
    """Hash of one visitor's state: entries, visits, goal events, counted sums."""
    return f"{partition_base(prefix, partition)}:v:{visitor_id}"


def entrants_key(prefix: str, partition: int, experiment_id: str) -> str:
    """List of the visitors that entered the experiment, in entry order."""
    return f"{partition_base(prefix, partition)}:ev:{experiment_id}"


def outbox_key(prefix: str, partition: int) -> str:
    """List of messages (dead letters, forwards) still to be published to Kafka."""
    return f"{partition_base(prefix, partition)}:outbox"


def partition_stats_key(prefix: str, partition: int) -> str:
    """Hash of ingestion counters of this partition (applied, duplicates, ...)."""
    return f"{partition_base(prefix, partition)}:stats"


def hold_key(prefix: str, partition: int) -> str:
    """Sorted set `visitor|event id` of conversions no entry keeps yet, by hold deadline.

    The deadline is the conversion's publish time plus the hold (ms); apply_batch.lua
    dead-letters a member once its partition's hold clock (`{base}:wm`, the newest
    publish time read in the assignments topic) has passed it.
    """
    return f"{partition_base(prefix, partition)}:hold"


def experiments_key(prefix: str) -> str:
    """Hash experiment id -> definition JSON, the read model of `ab.experiments`."""
    return f"{prefix}:experiments"


def meta_key(prefix: str) -> str:
    """Hash of facts every reader needs, such as the partition count of the input topics."""
    return f"{prefix}:meta"


def invalid_definition_key(prefix: str, partition: int, offset: int) -> str:
    """String marking an invalid record of `ab.experiments` as dead-lettered (once)."""
    return f"{prefix}:bad-definition:{partition}:{offset}"

"""The Redis key layout (DESIGN.md section 4): every key the project uses is named here,
the ones the Lua scripts build included.

Keys come in three families, by what must be written atomically with what:

* **Partition keys**, ``{prefix}:{p}:…``. Everything written for Kafka partition p
  carries the hash tag ``{p}``, so one call of apply_batch.lua updates visitor state,
  counters and the partition's applied offsets atomically, in one Redis Cluster slot.
  The script gets the offsets hash as KEYS[1], which declares that slot, and the base
  ``partition_base`` of the same tag, from which it builds the others with the
  suffixes below (tests/unit/test_store_keys.py holds the script to them).
* **Experiment keys**, ``{prefix}:{x:<experiment>}:…``. The decisions of one
  experiment (the idempotency keys taken, the winners outbox, the decision state, the
  decision history) change together in record_decisions.lua, which gets all four as
  KEYS: the hash tag ``{x:<experiment>}`` puts them in one slot (experiment ids hold no
  braces).
* **Single keys**, ``{prefix}:…``, each read or written on its own (a pipeline may read
  several, never a script): definitions, meta, API keys, share links, data codes,
  snapshots and their claims, end dates, stored timeseries, invalid-definition markers.
"""

from __future__ import annotations

# Suffixes of the partition keys, after ``{prefix}:{p}:`` (apply_batch.lua's own
# comments describe each key's fields).
OFFSETS = "off"
"""Hash topic -> last applied offset; the script's KEYS[1]."""
COUNTERS = "c"
"""``c:{experiment}:{hour}``: hash of one hour's counters."""
COUNTER_HOURS = "ch"
"""``ch:{experiment}``: set of the hours that have counters."""
DAY_COUNTERS = "day"
"""``day:{experiment}:{day}``: hash of one UTC day's counters (the sum of its hours)."""
COUNTER_DAYS = "days"
"""``days:{experiment}``: set of the UTC days that have counters."""
TOTALS = "tot"
"""``tot:{experiment}``: hash of the running totals, per variant (and goal)."""
CELL_TOTALS = "ctot"
"""``ctot:{experiment}``: hash of the running totals per cell and variant (and goal)."""
CELLS = "cells"
"""Hash segment cell text -> small id (and ``#``, the last id given)."""
VISITOR_BUCKET = "vs"
"""``vs:{bucket}``: hash visitor id -> the visitor's packed state (worker/store/visitor_records.py)."""
VISITOR_BUCKETS = "vb"
"""Hash of the visitor buckets' linear hashing: ``L`` (level), ``s`` (split pointer),
``n`` (visitors stored); buckets 0 .. 2^L + s - 1 exist."""
NAMES = "nm"
"""Hash of interned experiment, variant and goal names: ``t{name}`` -> id, ``i{id}`` -> name."""
LEGACY_VISITOR = "v"
"""``v:{visitor}``: hash of one visitor's state in the layout before the buckets; only
``python -m worker migrate`` reads it (the script refuses a partition that has them)."""
LEGACY_ENTRANTS = "ev"
"""``ev:{experiment}``: list of the experiment's visitors in entry order, in the layouts
before the column segments; only ``python -m worker migrate`` reads it."""
OUTBOX = "outbox"
"""List of dead letters and forwards to publish."""
STATS = "stats"
"""Hash of the partition's ingestion counts (applied, duplicates, ...)."""
HOLD = "hold"
"""Sorted set of held conversions (``visitor|event id``) by hold deadline."""
HELD_RAW = "heldraw"
"""Hash event id -> a held conversion's source record, dead-lettered if it expires."""
HOLD_CLOCK = "wm"
"""String: the hold clock, the newest publish time read in the assignments partition."""
DEDUP = "dd"
"""``dd:{day}:{xx}``: set of conversion id fingerprints of one event day, bucketed by
the first two hex digits of their SHA-1; expires after the de-duplication window."""

ENTRANT_COLUMNS = "xe"
"""``xe:{segment}:{experiment}``: string of fixed-width entrant records (the columnar
visitor store), ``SEGMENT_RECORDS`` a segment."""
FACT_COLUMNS = "xf"
"""``xf:{segment}:{experiment}``: fixed-width records of visits after the entry's and of
multiple exposures."""
EVENT_COLUMNS = "xg"
"""``xg:{segment}:{experiment}``: fixed-width goal-event records."""
COLUMN_COUNTS = "xn"
"""``xn:{experiment}``: hash ``e``, ``f``, ``g``: the records written to each column."""
SEGMENT_RECORDS = 4095
"""Records of one column segment; apply_batch.lua holds the same number. 4,095, not
4,096: a full segment of each record size (20, 8, 40 bytes) and the string's header then
fit jemalloc's size classes of 80, 32 and 160 KiB; 4,096 records took the next class up
(96, 40, 192 KiB)."""
COLUMNS_LAYOUT = "2"
"""The ``c`` field of ``VISITOR_BUCKETS`` in a partition of this layout (segmented
columns, no entrants list, the entry's own visit implied); apply_batch.lua holds the
same text and refuses a partition without it."""
STRINGS = "str"
"""Hash text -> id of the strings the column records name (variants, contexts, goals...)."""
VISIT_IDS = "vid"
"""Hash visit id -> id: the identity of the goal events' visits in the columns."""

PARTITION_SUFFIXES = (
    OFFSETS, COUNTERS, COUNTER_HOURS, DAY_COUNTERS, COUNTER_DAYS, TOTALS, CELL_TOTALS, CELLS, VISITOR_BUCKET, VISITOR_BUCKETS, NAMES,
    OUTBOX, STATS, HOLD, HELD_RAW, HOLD_CLOCK, DEDUP, ENTRANT_COLUMNS, FACT_COLUMNS, EVENT_COLUMNS,
    COLUMN_COUNTS, STRINGS, VISIT_IDS,
)  # fmt: skip


def partition_base(prefix: str, partition: int) -> str:
    """The common start of every key of one partition; the Lua script builds the rest."""
    return f"{prefix}:{{{partition}}}"


def offsets_key(prefix: str, partition: int) -> str:
    """Hash topic -> last applied offset of this partition."""
    return f"{partition_base(prefix, partition)}:{OFFSETS}"


def counters_key(prefix: str, partition: int, experiment_id: str, hour: int) -> str:
    """Hash of one hour's counters: `{cell_id}:{variant}[:{goal}]` -> packed metrics.

    apply_batch.lua documents the packing; `cells_key` maps cell ids to cells.
    """
    return f"{partition_base(prefix, partition)}:{COUNTERS}:{experiment_id}:{hour}"


def counter_hours_key(prefix: str, partition: int, experiment_id: str) -> str:
    """Set of the hours (since the epoch) that have a counters hash."""
    return f"{partition_base(prefix, partition)}:{COUNTER_HOURS}:{experiment_id}"


def day_counters_key(prefix: str, partition: int, experiment_id: str, day: int) -> str:
    """Hash of one UTC day's counters, fields as in `counters_key`: each the sum of the
    same field over the day's 24 hours. Also `<` and `>`: its first and last hour with
    counters."""
    return f"{partition_base(prefix, partition)}:{DAY_COUNTERS}:{experiment_id}:{day}"


def counter_days_key(prefix: str, partition: int, experiment_id: str) -> str:
    """Set of the UTC days (since the epoch) that have a day counters hash."""
    return f"{partition_base(prefix, partition)}:{COUNTER_DAYS}:{experiment_id}"


def totals_key(prefix: str, partition: int, experiment_id: str) -> str:
    """Hash of the experiment's running totals in this partition: `{variant}[:{goal}]`
    -> packed metrics (the sum of that variant's fields over every hour and cell), and
    `<`, `>`: the first and last hour with counters."""
    return f"{partition_base(prefix, partition)}:{TOTALS}:{experiment_id}"


def cell_totals_key(prefix: str, partition: int, experiment_id: str) -> str:
    """Hash of the experiment's running totals per segment cell in this partition:
    `{cell_id}:{variant}[:{goal}]` -> packed metrics (the sum of that field over every
    hour), and `<`, `>`: the first and last hour with counters."""
    return f"{partition_base(prefix, partition)}:{CELL_TOTALS}:{experiment_id}"


def cells_key(prefix: str, partition: int) -> str:
    """Hash segment cell text (`events.segment_cell.SegmentCell.text`) -> id.

    Also holds `#`, the last id given. Shared by the partition's experiments.
    """
    return f"{partition_base(prefix, partition)}:{CELLS}"


def visitor_bucket_key(prefix: str, partition: int, bucket: int) -> str:
    """Hash visitor id -> packed state (entries, visits, goal events, counted sums) of
    the visitors whose id hashes to this bucket (apply_batch.lua)."""
    return f"{partition_base(prefix, partition)}:{VISITOR_BUCKET}:{bucket}"


def visitor_buckets_key(prefix: str, partition: int) -> str:
    """Hash ``L``, ``s``, ``n``: which visitor buckets exist (2^L + s of them)."""
    return f"{partition_base(prefix, partition)}:{VISITOR_BUCKETS}"


def names_key(prefix: str, partition: int) -> str:
    """Hash of the names the visitor states refer to by id, both ways."""
    return f"{partition_base(prefix, partition)}:{NAMES}"


def legacy_visitor_key(prefix: str, partition: int, visitor_id: str) -> str:
    """Hash of one visitor's state in the layout with a key per visitor (migrate only)."""
    return f"{partition_base(prefix, partition)}:{LEGACY_VISITOR}:{visitor_id}"


def legacy_entrants_key(prefix: str, partition: int, experiment_id: str) -> str:
    """List of the visitors that entered the experiment, in the layouts before the column
    segments (migrate only)."""
    return f"{partition_base(prefix, partition)}:{LEGACY_ENTRANTS}:{experiment_id}"


def legacy_column_key(prefix: str, partition: int, column: str, experiment_id: str) -> str:
    """One whole column string (``ENTRANT_COLUMNS``, ``FACT_COLUMNS`` or
    ``EVENT_COLUMNS``) of the layout before the column segments (migrate only)."""
    return f"{partition_base(prefix, partition)}:{column}:{experiment_id}"


def entrant_columns_key(prefix: str, partition: int, experiment_id: str, segment: int) -> str:
    """One segment of the experiment's entrant records, row ``segment * SEGMENT_RECORDS``
    on (apply_batch.lua documents the 20-byte layout)."""
    return f"{partition_base(prefix, partition)}:{ENTRANT_COLUMNS}:{segment}:{experiment_id}"


def fact_columns_key(prefix: str, partition: int, experiment_id: str, segment: int) -> str:
    """One segment of the experiment's visit and multiple-exposure records (8 bytes each)."""
    return f"{partition_base(prefix, partition)}:{FACT_COLUMNS}:{segment}:{experiment_id}"


def event_columns_key(prefix: str, partition: int, experiment_id: str, segment: int) -> str:
    """One segment of the goal events that may count for the experiment (40 bytes each)."""
    return f"{partition_base(prefix, partition)}:{EVENT_COLUMNS}:{segment}:{experiment_id}"


def column_counts_key(prefix: str, partition: int, experiment_id: str) -> str:
    """Hash ``e``, ``f``, ``g``: how many records the experiment's entrant, fact and event
    columns hold (segment ``n // SEGMENT_RECORDS`` is the one still growing)."""
    return f"{partition_base(prefix, partition)}:{COLUMN_COUNTS}:{experiment_id}"


def strings_key(prefix: str, partition: int) -> str:
    """Hash text -> id (1, 2, ...) of the strings the partition's column records name."""
    return f"{partition_base(prefix, partition)}:{STRINGS}"


def visit_ids_key(prefix: str, partition: int) -> str:
    """Hash visit id -> id (1, 2, ...): the columns' visits, compared, never read back."""
    return f"{partition_base(prefix, partition)}:{VISIT_IDS}"


def outbox_key(prefix: str, partition: int) -> str:
    """List of messages (dead letters, forwards) still to be published to Kafka."""
    return f"{partition_base(prefix, partition)}:{OUTBOX}"


def partition_stats_key(prefix: str, partition: int) -> str:
    """Hash of ingestion counters of this partition (applied, duplicates, ...)."""
    return f"{partition_base(prefix, partition)}:{STATS}"


def hold_key(prefix: str, partition: int) -> str:
    """Sorted set `visitor|event id` of conversions no entry keeps yet, by hold deadline.

    The deadline is the conversion's publish time plus the hold (ms); apply_batch.lua
    dead-letters a member once its partition's hold clock (HOLD_CLOCK, the newest
    publish time read in the assignments topic) has passed it.
    """
    return f"{partition_base(prefix, partition)}:{HOLD}"


def experiment_base(prefix: str, experiment_id: str) -> str:
    """The common start of one experiment's decision keys: one hash tag, one slot."""
    return f"{prefix}:{{x:{experiment_id}}}"


def decided_key(prefix: str, experiment_id: str) -> str:
    """Set of the idempotency keys of the experiment's decisions already queued."""
    return f"{experiment_base(prefix, experiment_id)}:decided"


def winners_outbox_key(prefix: str, experiment_id: str) -> str:
    """List of the experiment's decision events still to be published to Kafka."""
    return f"{experiment_base(prefix, experiment_id)}:winners-outbox"


def decision_state_key(prefix: str, experiment_id: str) -> str:
    """String: the decision state (JSON) the next decisions start from."""
    return f"{experiment_base(prefix, experiment_id)}:decision-state"


def decision_history_key(prefix: str, experiment_id: str) -> str:
    """List of the experiment's decision events (JSON), newest first, capped at the newest
    ``snapshots.HISTORY_LIMIT``: what the results page shows once the relay has trimmed
    the outbox."""
    return f"{experiment_base(prefix, experiment_id)}:decision-history"


def experiments_key(prefix: str) -> str:
    """Hash experiment id -> definition JSON, the read model of `ab.experiments`."""
    return f"{prefix}:experiments"


def definition_offsets_key(prefix: str) -> str:
    """Hash experiment id -> the `ab.experiments` offset of its stored definition."""
    return f"{prefix}:experiment-offsets"


def meta_key(prefix: str) -> str:
    """Hash of facts every reader needs, such as the partition count of the input topics."""
    return f"{prefix}:meta"


def invalid_definition_key(prefix: str, partition: int, offset: int) -> str:
    """String marking an invalid record of `ab.experiments` as dead-lettered (once)."""
    return f"{prefix}:bad-definition:{partition}:{offset}"


def api_keys_key(prefix: str) -> str:
    """Hash SHA-256(API key) -> the key's record (JSON)."""
    return f"{prefix}:api-keys"


def data_code_key(prefix: str, code: str) -> str:
    """String: a Kameleoon data code's record (JSON), expiring with the code."""
    return f"{prefix}:data-code:{code}"


def share_key(prefix: str, token: str) -> str:
    """String: a share link's record (JSON), expiring with the link."""
    return f"{prefix}:share:{token}"


def share_index_key(prefix: str, project_key: str, experiment_id: str) -> str:
    """String: the token of the experiment's live share link, expiring with it."""
    return f"{prefix}:share-of:{project_key}:{experiment_id}"


def kameleoon_share_prefix(prefix: str) -> str:
    """The prefix the share-link keys of Kameleoon shared tokens take instead of
    ``prefix``: a Mida share link is no Kameleoon token, and the other way round."""
    return f"{prefix}:kameleoon"


def snapshot_key(prefix: str, experiment_id: str) -> str:
    """String: the experiment's latest result snapshot (JSON), served by the API."""
    return f"{prefix}:snapshot:{experiment_id}"


def snapshot_claim_key(prefix: str, experiment_id: str, interval_index: int) -> str:
    """String set (NX, expiring) by the one worker that computes this interval's snapshot."""
    return f"{prefix}:snapshot-claim:{experiment_id}:{interval_index}"


def timeseries_key(prefix: str, experiment_id: str, goal: str) -> str:
    """String: a goal's daily series stored by PostHog's ``recalculate_timeseries`` (JSON).
    Identifiers hold no ':', so the two parts cannot run together."""
    return f"{prefix}:timeseries:{experiment_id}:{goal}"


def ended_key(prefix: str, experiment_id: str) -> str:
    """String: when the worker first saw the experiment completed (ISO 8601)."""
    return f"{prefix}:ended-at:{experiment_id}"

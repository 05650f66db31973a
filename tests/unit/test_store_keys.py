"""worker/store/keys.py names every Redis key, the Lua scripts' included, and the keys
one script writes share one Redis Cluster slot."""

from __future__ import annotations

import re
from pathlib import Path

from worker.store import keys

STORE = Path(keys.__file__).parent
WORKER = STORE.parent


def script(name: str) -> str:
    return (STORE / name).read_text()


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the text between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


def test_every_key_apply_batch_builds_is_declared_in_keys() -> None:
    text = script("apply_batch.lua")
    built = set(re.findall(r"\bbase \.\. '[:]([a-z]+)", text))
    assert built, "apply_batch.lua builds its keys as base .. ':suffix'"
    # The offsets hash is the one key the script is given (KEYS[1]); it builds the rest.
    assert built == set(keys.PARTITION_SUFFIXES) - {keys.OFFSETS}
    assert set(re.findall(r"KEYS\[(\d+)\]", text)) == {"1"}


def test_apply_batch_holds_the_column_segments_and_layout_of_keys() -> None:
    text = script("apply_batch.lua")
    assert f"local SEGMENT_RECORDS = {keys.SEGMENT_RECORDS}\n" in text
    assert f"local COLUMNS_LAYOUT = '{keys.COLUMNS_LAYOUT}'\n" in text


def test_a_partition_keeps_every_key_in_the_slot_of_its_offsets() -> None:
    tag = hash_tag(keys.offsets_key("ab", 3))
    assert tag == "3"
    assert hash_tag(keys.partition_base("ab", 3)) == tag
    for key in (
        keys.counters_key("ab", 3, "x", 490_000),
        keys.counter_hours_key("ab", 3, "x"),
        keys.day_counters_key("ab", 3, "x", 20_416),
        keys.counter_days_key("ab", 3, "x"),
        keys.totals_key("ab", 3, "x"),
        keys.cell_totals_key("ab", 3, "x"),
        keys.cells_key("ab", 3),
        keys.visitor_bucket_key("ab", 3, 17),
        keys.visitor_buckets_key("ab", 3),
        keys.names_key("ab", 3),
        keys.legacy_visitor_key("ab", 3, "v"),
        keys.legacy_entrants_key("ab", 3, "x"),
        keys.legacy_column_key("ab", 3, keys.ENTRANT_COLUMNS, "x"),
        keys.entrant_columns_key("ab", 3, "x", 0),
        keys.fact_columns_key("ab", 3, "x", 1),
        keys.event_columns_key("ab", 3, "x", 2),
        keys.column_counts_key("ab", 3, "x"),
        keys.strings_key("ab", 3),
        keys.visit_ids_key("ab", 3),
        keys.outbox_key("ab", 3),
        keys.partition_stats_key("ab", 3),
        keys.hold_key("ab", 3),
    ):
        assert key.startswith(keys.partition_base("ab", 3) + ":") and hash_tag(key) == tag


def test_the_decisions_script_gets_every_key_in_keys_and_one_slot() -> None:
    text = script("record_decisions.lua")
    key_arguments = re.findall(r"redis\.call\('\w+',\s*([^,)]+)", text)
    assert key_arguments and all(re.fullmatch(r"KEYS\[\d\]", arg) for arg in key_arguments)
    assert set(re.findall(r"KEYS\[(\d+)\]", text)) == {"1", "2", "3", "4"}
    decision_keys = (
        keys.decided_key("ab", "checkout.v2"),
        keys.winners_outbox_key("ab", "checkout.v2"),
        keys.decision_state_key("ab", "checkout.v2"),
        keys.decision_history_key("ab", "checkout.v2"),
    )
    assert {hash_tag(key) for key in decision_keys} == {"x:checkout.v2"}
    assert hash_tag(keys.decided_key("ab", "other")) != "x:checkout.v2"


def test_no_module_outside_keys_builds_a_key() -> None:
    prefixed = re.compile(r"""f["'][^"']*\{[\w.]*prefix\}:""")
    builders = [
        str(path.relative_to(WORKER))
        for path in WORKER.rglob("*.py")
        if path != Path(keys.__file__) and prefixed.search(path.read_text())
    ]
    assert builders == []

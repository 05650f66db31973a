"""The packed visitor state (worker/store/visitor_records.py) and the move of the old
per-visitor hashes into it (worker/store/visitor_migration.py)."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest

from worker.store import visitor_records
from worker.store.visitor_migration import legacy_visitor
from worker.store.visitor_records import (
    GoalSums,
    StoredEntry,
    StoredEvent,
    StoredVisitor,
    bucket_of,
    decode_visitor,
    encode_visitor,
    entry_row,
    entry_rows,
    level_for,
)

SCRIPT = (Path(visitor_records.__file__).parent / "apply_batch.lua").read_text()


class Ids:
    """An interner that numbers texts 1, 2, ... in the order asked."""

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}

    def __call__(self, text: str | bytes) -> int:
        raw = text.encode() if isinstance(text, str) else text
        return self.ids.setdefault(raw, len(self.ids) + 1)

    def names(self) -> dict[int, str]:
        return {number: text.decode() for text, number in self.ids.items()}


def test_an_old_visitor_hash_reads_as_the_state_it_stood_for() -> None:
    fields = {
        b"kx": b"other,x",
        b"kg": b"buy:3,view:1",
        b"e1": b"b|1000|2",  # written before the clock was kept
        b"e2": b"a|7200000|1|7100000",
        b"x2": b'{"city":"Paris"}',
        b"r2": b"4",
        b"m2": b"b",
        b"n2": b"2",
        b"v2:s1": b"2",
        b"v2:_": b"3",
        b"v1:s1": b"0",
        b"n1": b"1",
        b"k1:3": b'{"t":7300000,"v":"2.5","c":"EUR","a":{"plan":"pro"}}',
        b"k1:1": b'{"t":7250000,"s":"s1","x":"x"}',
        b"k2:1": b'{"t":7400000,"h":1,"i":"e9"}',
        b"s2:1": b"2|2.5|1",
        b"c2:1:s1": b"1",
        b"p2:1": b"1|4.5",
    }
    strings, visits = Ids(), Ids()
    state = legacy_visitor(fields, strings, visits)
    s1, none = visits(b"s1"), visits(b"_")
    paris, euro, pro = (strings(text) for text in (b'{"city":"Paris"}', b"EUR", b'{"plan":"pro"}'))
    assert state == StoredVisitor(
        entries=(
            StoredEntry("other", "b", 1000, 2, 0, 0, None, 1, False, ((s1, 0),), {}),
            StoredEntry(
                "x", "a", 7200000, 1, paris, 7100000, 4, 2, True, ((s1, 2), (none, 3)),
                {1: GoalSums(2, 2.5, 1, (s1,), (1, 4.5))},
            ),
        ),
        goals=(
            # k1:2 was dead-lettered after the hold: a gap, the order of the rest kept
            ("buy", (
                StoredEvent(7250000, s1, experiment="x"),
                StoredEvent(7300000, none, value=2.5, currency=euro, attributes=pro),
            )),
            ("view", (StoredEvent(7400000, none, held_id="e9"),)),
        ),
    )  # fmt: skip


def test_a_state_reads_back_as_it_was_written() -> None:
    names = Ids()
    visitor = StoredVisitor(
        entries=(
            StoredEntry(
                "exp", "treatment", 1_795_000_000_123, 300, 7, 1_795_000_500_000, 1_000_000, 3,
                True, ((1, 0), (200, 5), (3, -1)),
                {1: GoalSums(4, 19.99, 2, (1, 200), None), 2: GoalSums(0, 0.0, 0, (), (2, -3.5)),
                 3: GoalSums(1, 0.1 + 0.2, 1, (3,), (1, -1e300))},
            ),
        ),
        goals=(
            ("purchase", (
                StoredEvent(1_795_000_000_200, 1, value=0.0, held_id="id-é"),
                StoredEvent(1_700_000_000_000, 3, value=-0.07),
                StoredEvent(1_795_000_000_200, 1, value=1 / 3),
            )),
            ("view", (StoredEvent(-5, 200, currency=9, experiment="exp", attributes=4),)),
        ),
    )  # fmt: skip
    held_only = StoredVisitor((), (("view", (StoredEvent(1_795_000_000_000, 2, held_id="h"),)),))
    for state in (visitor, held_only):
        assert decode_visitor(encode_visitor(state, names), names.names()) == state


def test_an_entry_row_is_found_past_the_entries_before_it() -> None:
    names = Ids()
    first = StoredEntry(
        "a", "x", 1_795_000_000_000, 1, 0, 1_795_000_000_000, 4, 2, False, ((1, 0), (2, 3)),
        {1: GoalSums(2, 5.5, 1, (1,), (1, 2.0))},
    )  # fmt: skip
    second = StoredEntry("b", "y", 1_795_000_100_000, 2, 3, 1_795_000_100_000, 9, 1, True, ())
    rowless = StoredEntry("c", "z", 1_795_000_200_000, 2, 3, 1_795_000_200_000, None, 1, False, ())
    data = encode_visitor(StoredVisitor((first, second, rowless), (("g", ()),)), names)
    for experiment, row in (("a", 4), ("b", 9), ("c", None), ("absent", None)):
        assert entry_row(data, names(experiment)) == row


def test_entry_rows_of_many_states_are_each_states_entry_row() -> None:
    """The numpy decoding against entry_row: first entries, later ones, goal-only
    states, rowless entries, rows and name ids of 1-5 varint bytes, texts and amounts
    whose bytes look like varint ends."""
    rng = random.Random(5)
    names = Ids()
    for number in range(300):  # name ids past one varint byte
        names(f"name{number}")

    def entry(experiment: str) -> StoredEntry:
        row = rng.choice([None, 0, 5, 127, 128, 70_000, 2**32 - 1])
        entry_ms = 1_795_000_000_000 + rng.randrange(10**9)
        return StoredEntry(
            experiment, rng.choice(["x", "name250"]), entry_ms, rng.randrange(300),
            rng.randrange(3), entry_ms + rng.randrange(10**6), row, 1, False, (),
            {1: GoalSums(1, rng.random() * 1e3, 1, (1,))} if rng.random() < 0.3 else {},
        )  # fmt: skip

    def goals() -> tuple[tuple[str, tuple[StoredEvent, ...]], ...]:
        event = StoredEvent(1_795_000_000_000, 2, value=rng.random() * 1e6, held_id="\xff\x80é")
        return (("g", (event,)),) if rng.random() < 0.5 else ()

    experiments = ["a", "name200", "name299", "b"]
    states = []
    for _ in range(2_000):
        chosen = rng.sample(experiments, rng.randrange(len(experiments) + 1))
        states.append(encode_visitor(StoredVisitor(tuple(map(entry, chosen)), goals()), names))
    for experiment in [*experiments, "absent"]:
        expected = [entry_row(state, names(experiment)) for state in states]
        got = entry_rows(states, names(experiment))
        assert got.tolist() == [-1 if row is None else row for row in expected]
        assert (got >= 0).sum() > 0 or experiment == "absent"
    assert entry_rows([], names("a")).size == 0


def test_the_bucket_rules_are_the_scripts() -> None:
    load = re.search(r"local BUCKET_LOAD = (\d+)", SCRIPT)
    assert load and int(load.group(1)) == visitor_records.BUCKET_LOAD
    assert "tonumber(string.sub(redis.sha1hex(visitor), 1, 8), 16)" in SCRIPT
    assert visitor_records.visitor_hash(b"v1") == int(hashlib.sha1(b"v1").hexdigest()[:8], 16)


@pytest.mark.parametrize(("visitors", "level"), [(0, 0), (40, 0), (41, 1), (80, 1), (81, 2)])
def test_the_level_holds_the_visitors_without_a_split(visitors: int, level: int) -> None:
    assert level_for(visitors) == level


def test_a_split_bucket_sends_its_visitors_to_itself_or_its_image() -> None:
    for number in range(500):
        visitor = b"v%d" % number
        before = bucket_of(visitor, 3, 2)
        after = bucket_of(visitor, 3, 3)
        # splitting bucket 2 moves only some of its visitors, and only to bucket 2 + 8
        assert after == before or (before == 2 and after == 10)

"""Readers of the Lua sink's compact layout (worker/store/counter_reader.py, visitor_reader.py).

The integration tests check them end to end against an oracle; these pin the parsing
of the stored text on hand-written hashes, with a dictionary standing in for Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, cast

from redis.asyncio import Redis

from worker.events.segment_cell import SegmentCell
from worker.results.cell_aggregation import CellTable, aggregate_cells
from worker.results.query import ResultQuery
from worker.store import keys
from worker.store.counter_reader import (
    CellKey,
    Counters,
    Grain,
    HashRead,
    plan_day_reads,
    probed_hours,
    read_counters,
)

PREFIX = "t"
CELL_A = b"mobile|chrome|ios|US|new|direct"
CELL_B = b"desktop|firefox|linux|DE|returning|search"


class FakePipeline:
    """The pipeline calls the readers make, answered from FakeRedis' data."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._calls: list[Callable[[], Any]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def hgetall(self, key: str) -> None:
        self._calls.append(lambda: dict(self._data.get(key, {})))

    def smembers(self, key: str) -> None:
        self._calls.append(lambda: set(self._data.get(key, set())))

    def hget(self, key: str, field: bytes) -> None:
        self._calls.append(lambda: self._data.get(key, {}).get(field))

    def smismember(self, key: str, values: list[int]) -> None:
        members = self._data.get(key, set())
        self._calls.append(lambda: [int(str(value).encode() in members) for value in values])

    async def execute(self) -> list[Any]:
        return [call() for call in self._calls]


class FakeRedis:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self.data)

    def hget(self, key: str, field: str) -> Awaitable[bytes | None]:
        async def reply() -> bytes | None:
            value = self.data.get(key, {}).get(field.encode())
            return cast(bytes | None, value)

        return reply()


def cells_hash(*texts: bytes) -> dict[bytes, bytes]:
    ids = {text: str(number).encode() for number, text in enumerate(texts, start=1)}
    return {**ids, b"#": str(len(texts)).encode()}


async def test_counters_are_unpacked_and_summed_over_partitions_by_cell_text() -> None:
    # The two partitions give the same cell different ids.
    data: dict[str, Any] = {
        keys.meta_key(PREFIX): {b"partitions": b"2"},
        keys.cells_key(PREFIX, 0): cells_hash(CELL_A, CELL_B),
        keys.cells_key(PREFIX, 1): cells_hash(CELL_B, CELL_A),
        keys.counter_hours_key(PREFIX, 0, "x"): {b"100", b"101"},
        keys.counter_hours_key(PREFIX, 1, "x"): {b"100"},
        keys.counters_key(PREFIX, 0, "x", 100): {
            b"1:a": b"2,3,1",
            b"1:a:buy": b"1,1,2,4,1,9.5,90.25",
            b"2:b": b"1",
        },
        keys.counters_key(PREFIX, 0, "x", 101): {b"1:a": b"0,1"},
        keys.counters_key(PREFIX, 1, "x", 100): {
            b"2:a": b"1,1",
            b"2:a:buy": b"1,1,1,1",
            b"2:a:sign-up": b"1,1,1,1",
        },
    }
    counters = await read_counters(cast(Redis, FakeRedis(data)), PREFIX, "x")
    assert counters.data_hours == [100, 101]
    cells = counters.cells
    a = SegmentCell.parse(CELL_A.decode())
    b = SegmentCell.parse(CELL_B.decode())
    assert cells == {
        CellKey("a", 100, a): {
            "n": 3.0,
            "visits": 4.0,
            "me": 1.0,
            "g:buy:cv": 2.0,
            "g:buy:cvis": 2.0,
            "g:buy:ev": 3.0,
            "g:buy:ev2": 5.0,
            "g:buy:ord": 1.0,
            "g:buy:rev": 9.5,
            "g:buy:rev2": 90.25,
            "g:sign-up:cv": 1.0,
            "g:sign-up:cvis": 1.0,
            "g:sign-up:ev": 1.0,
            "g:sign-up:ev2": 1.0,
        },
        CellKey("a", 101, a): {"visits": 1.0},
        CellKey("b", 100, b): {"n": 1.0},
    }


async def test_the_per_visitor_sums_packed_after_the_first_metrics_are_read_by_name() -> None:
    data: dict[str, Any] = {
        keys.meta_key(PREFIX): {b"partitions": b"1"},
        keys.cells_key(PREFIX, 0): cells_hash(CELL_A),
        keys.counter_hours_key(PREFIX, 0, "x"): {b"100"},
        keys.counters_key(PREFIX, 0, "x", 100): {
            b"1:a": b"2,3,0,3,5",
            b"1:a:buy": b"2,2,3,5,3,35,625,4,4,6,40,5,65,120,14400,1200",
        },
    }
    cells = (await read_counters(cast(Redis, FakeRedis(data)), PREFIX, "x")).cells
    a = SegmentCell.parse(CELL_A.decode())
    assert cells[CellKey("a", 100, a)] == {
        "n": 2.0, "visits": 3.0, "vc": 3.0, "vc2": 5.0,
        "g:buy:cv": 2.0, "g:buy:cvis": 2.0, "g:buy:ev": 3.0, "g:buy:ev2": 5.0,
        "g:buy:ord": 3.0, "g:buy:rev": 35.0, "g:buy:rev2": 625.0, "g:buy:cvis2": 4.0,
        "g:buy:vcvis": 4.0, "g:buy:vev": 6.0, "g:buy:vrev": 40.0, "g:buy:ord2": 5.0,
        "g:buy:revord": 65.0, "g:buy:x": 120.0, "g:buy:x2": 14400.0, "g:buy:xy": 1200.0,
    }  # fmt: skip
    totals = aggregate_cells(CellTable.from_counters(cells), ResultQuery(), "buy", ["a"])
    assert {
        name: value
        for name, value in totals.variants[0].as_dict().items()
        if name not in ("variant_id", "multiple_exposures")
    } == {
        "visitors": 2, "visits": 3, "cohort_visits": 3, "cohort_visits_sum_squares": 5,
        "conversions": 2, "converted_visits": 2, "goal_events": 3,
        "goal_events_sum_squares": 5, "orders": 3, "revenue": 35.0,
        "revenue_sum_squares": 625.0, "converted_visits_sum_squares": 4,
        "visits_converted_visits_product": 4, "visits_goal_events_product": 6,
        "visits_revenue_product": 40.0, "orders_sum_squares": 5,
        "revenue_orders_product": 65.0, "covariate_sum": 120.0,
        "covariate_sum_squares": 14400.0, "covariate_product_sum": 1200.0,
    }  # fmt: skip


async def test_an_experiment_without_counters_reads_as_empty() -> None:
    assert await read_counters(cast(Redis, FakeRedis({})), PREFIX, "x") == Counters({}, [])


def test_a_range_reads_whole_days_and_the_cheaper_side_of_each_edge_day() -> None:
    # Days 10-12 listed; the range is UTC hours [10*24 + 22, 12*24 + 21), a timezone's
    # local days: day 10 keeps 2 hours (read them), day 11 is whole, day 12 keeps 21
    # hours (read the day less its last 3).
    reads = plan_day_reads([10, 11, 12], (10 * 24 + 22, 12 * 24 + 21))
    assert reads == [
        HashRead(day=False, number=262, row_hour=262),
        HashRead(day=False, number=263, row_hour=263),
        HashRead(day=True, number=11, row_hour=264),
        HashRead(day=True, number=12, row_hour=288, sign=1, whole=False),
        HashRead(day=False, number=309, row_hour=288, sign=-1),
        HashRead(day=False, number=310, row_hour=288, sign=-1),
        HashRead(day=False, number=311, row_hour=288, sign=-1),
    ]
    assert probed_hours(reads) == list(range(288, 309))


async def test_a_day_less_its_hours_outside_the_range_sums_as_its_hours_inside() -> None:
    # Hours [0, 22): the day less hours 22 and 23. Cell B's revenue is all outside, 0.1 +
    # 0.2 in hour 22 and 0.3 in hour 23; the day holds (0.1 + 0.2) + 0.3, and the
    # subtraction leaves 5.6e-17 of it: a residue of rounding, which reads as nothing.
    day_b = (0.1 + 0.2) + 0.3
    data: dict[str, Any] = {
        keys.meta_key(PREFIX): {b"partitions": b"1"},
        keys.cells_key(PREFIX, 0): cells_hash(CELL_A, CELL_B),
        keys.counter_days_key(PREFIX, 0, "x"): {b"0"},
        keys.counter_hours_key(PREFIX, 0, "x"): {b"3", b"22", b"23"},
        keys.day_counters_key(PREFIX, 0, "x", 0): {
            b"<": b"3",
            b">": b"23",
            b"1:a": b"1",
            b"1:a:buy": b"1,1,1,1,1,2.5,6.25",
            b"2:a": b"3",
            b"2:a:buy": b"3,3,3,3,3,%r,0" % day_b,
        },
        keys.counters_key(PREFIX, 0, "x", 3): {b"1:a": b"1", b"1:a:buy": b"1,1,1,1,1,2.5,6.25"},
        keys.counters_key(PREFIX, 0, "x", 22): {
            b"2:a": b"2",
            b"2:a:buy": b"2,2,2,2,2,%r,0" % (0.1 + 0.2),
        },
        keys.counters_key(PREFIX, 0, "x", 23): {b"2:a": b"1", b"2:a:buy": b"1,1,1,1,1,0.3,0"},
    }
    counters = await read_counters(cast(Redis, FakeRedis(data)), PREFIX, "x", Grain.DAYS, (0, 22))
    a = SegmentCell.parse(CELL_A.decode())
    assert list(counters.cells) == [CellKey("a", 0, a)]
    assert counters.cells[CellKey("a", 0, a)]["g:buy:rev"] == 2.5
    # 23 is the history's last hour, which every read of days reports (`ends`)
    assert counters.data_hours == [3, 23]

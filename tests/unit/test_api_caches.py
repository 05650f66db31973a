"""The read API's in-process caches: shared Redis reads, key parsing, stale results."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from worker.api.caching import results as result_source
from worker.api.caching.api_keys import presented_key
from worker.api.caching.results import CACHE_SECONDS, STALE_SECONDS, ResultSource
from worker.api.caching.shared_reads import SharedReads
from worker.api.scans import ScanLimiter
from worker.config import Settings
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import ResultDocument, Snapshot
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals

DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": "e",
        "project_key": "p",
        "name": "E",
        "status": "live",
        "variants": [{"id": "0", "name": "A", "is_control": True}, {"id": "1", "name": "B"}],
        "goals": [{"key": "g", "name": "G", "primary": True}],
    }
)
FILTERED = ResultQuery(min_count=2)


async def test_concurrent_reads_share_one_round_trip_that_started_after_them() -> None:
    reads = SharedReads[int]()
    store = {"value": 1}
    started: list[int] = []

    async def reader() -> int:
        seen = store["value"]  # what Redis answers: the state when the read arrives
        started.append(seen)
        await asyncio.sleep(0.01)
        return seen

    first = [asyncio.create_task(reads.read("k", reader)) for _ in range(5)]
    while not started:  # until the first read is on the wire
        await asyncio.sleep(0)
    store["value"] = 2  # a write that completes before the next requests arrive
    later = [asyncio.create_task(reads.read("k", reader)) for _ in range(5)]
    assert await asyncio.gather(*first) == [1] * 5
    assert await asyncio.gather(*later) == [2] * 5, "never an answer older than the request"
    assert started == [1, 2], "one read per batch of concurrent requests"


async def test_a_failed_read_fails_every_waiter_and_the_next_read_runs() -> None:
    reads = SharedReads[int]()

    async def failing() -> int:
        await asyncio.sleep(0)
        raise ConnectionError("redis down")

    results = await asyncio.gather(
        *(reads.read("k", failing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionError) for result in results)

    async def working() -> int:
        return 7

    assert await reads.read("k", working) == 7


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", "other", "abc"),
        ("Basic abc", "other", "other"),
        ("Bearer ", "other", "other"),
        ("Bearer", None, None),
        (None, "", None),
        (None, None, None),
    ],
)
def test_the_presented_key_is_read_as_fastapi_reads_it(
    authorization: str | None, x_api_key: str | None, expected: str | None
) -> None:
    assert presented_key(authorization, x_api_key) == expected


class CountingSource(ResultSource):
    """A result source whose computations are counted and take a moment."""

    def __init__(self) -> None:
        scans = ScanLimiter(1, 0, CollectorRegistry())
        super().__init__(redis=None, settings=Settings.from_env(), scans=scans)  # type: ignore[arg-type]
        self.computations = 0
        self.release = asyncio.Event()

    async def _compute(self, definition: ExperimentDefinition, query: ResultQuery) -> Any:
        self.computations += 1
        await self.release.wait()
        return {"computation": self.computations}


def age(source: ResultSource, seconds: float) -> None:
    """Make every cached computation ``seconds`` old."""
    for key, computed in source._cache.items():
        source._cache[key] = dataclasses.replace(
            computed, at=result_source.time.monotonic() - seconds
        )


async def test_an_expired_result_is_served_while_one_recomputation_runs() -> None:
    source = CountingSource()
    source.release.set()
    first, version = await source.versioned(DEFINITION, FILTERED)
    assert first == {"computation": 1} and source.is_current(version)

    source.release.clear()
    age(source, CACHE_SECONDS + 1)
    served = await asyncio.gather(*(source.document(DEFINITION, FILTERED) for _ in range(5)))
    assert served == [first] * 5, "stale but within STALE_SECONDS: nobody waits"
    assert source.computations == 2, "one background recomputation for all of them"
    source.release.set()
    await asyncio.sleep(0.01)
    assert not source.is_current(version)
    assert await source.document(DEFINITION, FILTERED) == {"computation": 2}


async def test_a_result_past_the_stale_limit_is_never_served() -> None:
    source = CountingSource()
    source.release.set()
    _, version = await source.versioned(DEFINITION, FILTERED)
    age(source, STALE_SECONDS + 1)
    assert not source.is_current(version)
    assert await source.document(DEFINITION, FILTERED) == {"computation": 2}


class StoredSnapshot:
    """Redis as the result source reads a snapshot: one stored value."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    async def get(self, key: str) -> bytes:
        return self.value


def stored_snapshot() -> tuple[ResultDocument, bytes]:
    rows = [VariantTotals("0", visitors=10, conversions=1), VariantTotals("1", visitors=10)]
    document = result_document(DEFINITION, {"g": QueryTotals(rows)})
    snapshot = Snapshot(
        document=document,
        applied_offsets={},
        computed_at=datetime(2026, 11, 20, tzinfo=UTC),
        interval_index=1,
        computed_by="test:1",
    )
    return document, orjson.dumps(snapshot.model_dump(mode="json"))


async def test_the_default_result_is_the_snapshot_parsed_once_per_stored_bytes() -> None:
    document, raw = stored_snapshot()
    source = CountingSource()
    source._redis = StoredSnapshot(raw)  # type: ignore[assignment]
    served = await source.document(DEFINITION, ResultQuery())
    assert served == document
    assert await source.document(DEFINITION, ResultQuery()) is served, "parsed once"
    source._redis = StoredSnapshot(raw.replace(b'"test:1"', b'"test:2"'))  # type: ignore[assignment]
    assert await source.document(DEFINITION, ResultQuery()) is not served, "new bytes, new parse"
    assert source.computations == 0


async def test_a_snapshot_this_version_cannot_read_is_computed_instead() -> None:
    _, raw = stored_snapshot()
    source = CountingSource()
    source.release.set()
    source._redis = StoredSnapshot(raw[:-1] + b',"added_later":1}')  # type: ignore[assignment]
    assert await source.document(DEFINITION, ResultQuery()) == {"computation": 1}

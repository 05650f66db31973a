"""Read positions: what a consumer expects Redis to hold, and the seeks a roll-back needs."""

from __future__ import annotations

import pytest

from worker.ingestion.commands import SourceMessage
from worker.ingestion.positions import ReadPositions, Rewind, resume_at, roll_back, set_aside

A, C = "assignments", "conversions"


def batch(*records: tuple[str, int, int]) -> list[SourceMessage]:
    return [
        SourceMessage(topic, partition, offset, None, None) for topic, partition, offset in records
    ]


def test_first_batch_after_an_unknown_position_expects_nothing() -> None:
    positions = ReadPositions()
    span = positions.span(batch((A, 0, 10), (A, 0, 11), (C, 0, 4)))
    assert span.expected(0) == {}
    assert span.first == {(A, 0): 10, (C, 0): 4}
    assert span.last == {(A, 0): 11, (C, 0): 4}


def test_batches_expect_what_the_previous_one_ended_at() -> None:
    positions = ReadPositions()
    positions.sought(A, 0, 9)  # positioned after offset 9 (from Redis)
    first = positions.span(batch((A, 0, 10), (A, 0, 12), (C, 1, 3)))
    second = positions.span(batch((A, 0, 13), (C, 1, 4), (A, 1, 0)))
    assert first.expected(0) == {A: 9}
    assert first.expected(1) == {}
    assert second.expected(0) == {A: 12}
    assert second.expected(1) == {C: 3}


def test_only_applied_batches_count_as_known_to_redis() -> None:
    positions = ReadPositions()
    positions.sought(A, 0, 9)
    first = positions.span(batch((A, 0, 10), (C, 0, 5)))
    positions.span(batch((A, 0, 11)))  # planned, not applied yet
    assert positions.known_applied() == {(A, 0): 9}
    positions.applied(first)
    assert positions.known_applied() == {(A, 0): 10, (C, 0): 5}


def test_roll_back_rewinds_every_topic_of_the_partition_and_says_how_much_was_lost() -> None:
    positions = ReadPositions()
    positions.sought(A, 2, 99)
    positions.sought(C, 2, 40)
    span = positions.span(batch((A, 2, 100), (C, 2, 41), (A, 3, 7)))
    rewinds = roll_back(span, 2, {A: 60})
    assert rewinds == [
        Rewind(A, 2, 61, 60, lost=39),  # Redis holds 60 of the 99 applied
        Rewind(C, 2, 41, 40, lost=0),  # not behind: only this batch's records again
    ]


def test_a_batch_set_aside_is_read_again_from_where_it_started() -> None:
    positions = ReadPositions()
    positions.sought(A, 0, 4)
    span = positions.span(batch((A, 0, 5), (A, 0, 6), (C, 0, 0)))
    rewinds = set_aside(span)
    assert rewinds == [Rewind(A, 0, 5, 4), Rewind(C, 0, 0, None)]
    positions.reposition(rewinds)
    assert positions.span(batch((A, 0, 5), (C, 0, 0))).expected(0) == {A: 4}


def test_a_later_rewind_of_the_same_partition_wins() -> None:
    positions = ReadPositions()
    positions.reposition([Rewind(A, 0, 8, 7), Rewind(A, 0, 3, 2, lost=5)])
    assert positions.known_applied() == {(A, 0): 2}


def test_forgotten_partitions_expect_nothing() -> None:
    positions = ReadPositions()
    positions.sought(A, 0, 4)
    positions.forget([(A, 0)])
    assert positions.span(batch((A, 0, 5))).expected(0) == {}
    assert positions.known_applied() == {}


def test_an_assigned_partition_resumes_after_what_redis_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert resume_at(A, 0, None, 50) is None  # Redis has nothing: the committed offset stands
    assert resume_at(A, 0, 49, 50) == 50
    assert not caplog.records
    assert resume_at(A, 0, 9, 50) == 10  # committed ahead of Redis: a roll-back of 40
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "holds offset 9 but offset 49 was committed; reading the 40 lost" in record.getMessage()

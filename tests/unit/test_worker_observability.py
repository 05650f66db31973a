"""Issue 13, parts 5 and 6: the worker is never silent in an outage, and it has metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.exceptions
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from worker.config import Settings
from worker.ingestion import metrics, outage
from worker.ingestion.metrics import MetricsServer, dead_letter_reasons, observe_batch
from worker.ingestion.pipeline import _retrying
from worker.ingestion.registry import ExperimentRegistry
from worker.services import kafka_server

# --- the Kafka probe leaves aiokafka's logger alone ------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_kafka_probe_neither_changes_nor_needs_aiokafkas_log_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    library = logging.getLogger("aiokafka")
    library.setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    assert kafka_server.answers(f"127.0.0.1:{closed_port()}") is False
    # Once, the probe set this logger to CRITICAL for good: the worker, which probes
    # before it starts, then logged nothing of a 19-second broker outage.
    assert library.level == logging.NOTSET
    assert library.getEffectiveLevel() <= logging.ERROR
    noisy = [r for r in caplog.records if r.name.startswith("aiokafka") and r.levelno >= 30]
    assert noisy == [], [r.getMessage() for r in noisy]


# --- outage warnings ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.start = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.now - 1000.0)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(outage, "_monotonic", fake.monotonic)
    monkeypatch.setattr(outage, "_wall", fake.wall)
    monkeypatch.setattr(outage, "_sleep", fake.sleep)
    outage.configure("redis://:secret@127.0.0.1:16379/0", "127.0.0.1:19092")
    for tracker in outage.TRACKERS:
        tracker.since = tracker.since_wall = None
        tracker.warned_at = 0.0
    yield fake
    for tracker in outage.TRACKERS:
        tracker.since = tracker.since_wall = None


class Timed(logging.Handler):
    """Notes each warning of worker/ingestion/outage.py with the fake clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(logging.WARNING)
        self.clock = clock
        self.seen: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((self.clock.now, record.getMessage()))


@pytest.fixture
def timed(clock: FakeClock) -> Iterator[Timed]:
    handler = Timed(clock)
    logger = logging.getLogger(outage.__name__)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def test_retrying_warns_at_once_then_every_10_s_saying_what_and_since_when(
    clock: FakeClock, timed: Timed
) -> None:
    failures = 40
    failed_at: list[float] = []

    async def attempt() -> str:
        if len(failed_at) < failures:
            failed_at.append(clock.now)
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:16379.")
        return "applied"

    retries_before = sample("ab_worker_retries_total", service="redis")
    assert await _retrying("batch of 500 not applied yet", attempt) == "applied"

    waiting = [(at, text) for at, text in timed.seen if text.startswith("waiting for")]
    assert failed_at[-1] - failed_at[0] > 150  # backoff capped at 5 s: minutes of failures
    assert waiting[0][0] == failed_at[0]  # the first failure warns at once
    gaps = [b[0] - a[0] for a, b in zip(waiting, waiting[1:], strict=False)]
    # At most every 10 s (not at every retry), and, with retries at most 5 s apart,
    # at least every 15 s here; the runtime's reminder makes it every 10 s.
    assert len(gaps) >= 14 and all(10 <= gap <= 15 for gap in gaps), gaps
    assert waiting[0][1].startswith(
        "waiting for Redis at redis://127.0.0.1:16379/0 since 2026-12-03T10:00:00+00:00 (0 s): "
        "batch of 500 not applied yet; last error: ConnectionError: Error 111"
    ), waiting[0][1]
    elapsed = round(waiting[-1][0] - failed_at[0])
    assert f"since 2026-12-03T10:00:00+00:00 ({elapsed} s)" in waiting[-1][1]
    assert all("secret" not in text for _, text in timed.seen)
    assert timed.seen[-1][1].startswith("Redis at redis://127.0.0.1:16379/0 answers again")
    assert not outage.REDIS.down
    assert sample("ab_worker_retries_total", service="redis") == retries_before + failures


async def test_a_wait_without_new_errors_is_still_reported_every_10_s(
    clock: FakeClock, timed: Timed
) -> None:
    # An attempt that hangs (a producer waiting out its request timeout) raises nothing
    # new: the runtime's reminder, called every second, keeps the warnings coming.
    outage.KAFKA.failed(KafkaConnectionError("Unable to bootstrap"), "no answer to the probe")
    for _ in range(35):
        clock.now += 1.0
        outage.remind_all()
    assert [at - 1000.0 for at, _ in timed.seen] == [0, 10, 20, 30]
    assert timed.seen[-1][1].startswith(
        "waiting for Kafka at 127.0.0.1:19092 since 2026-12-03T10:00:00+00:00 (30 s): "
        "no answer to the probe; last error: KafkaConnectionError"
    ), timed.seen[-1][1]
    outage.KAFKA.recovered()
    assert "answers again, after 35 s" in timed.seen[-1][1]


def test_the_warning_interval_and_the_stop_grace_come_from_the_environment(
    clock: FakeClock, timed: Timed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both are documented settings; the integration test of an outage shortens them.
    defaults = Settings.from_env()
    assert (defaults.outage_warn_seconds, defaults.stop_grace_seconds) == (10.0, 10.0)
    monkeypatch.setenv("AB_OUTAGE_WARN_SECONDS", "2.5")
    monkeypatch.setenv("AB_STOP_GRACE_SECONDS", "3")
    settings = Settings.from_env()
    assert (settings.outage_warn_seconds, settings.stop_grace_seconds) == (2.5, 3.0)
    outage.configure(settings.redis_url, settings.kafka_bootstrap_servers, 2.5)
    try:
        outage.REDIS.failed(redis.exceptions.ConnectionError("refused"), "a batch")
        for _ in range(8):
            clock.now += 1.0
            outage.remind_all()
        assert [at - 1000.0 for at, _ in timed.seen] == [0, 3, 6]
    finally:
        outage.REDIS.recovered()
        outage.configure(settings.redis_url, settings.kafka_bootstrap_servers)
    assert all(tracker.warn_every == 10.0 for tracker in outage.TRACKERS)


def test_transient_errors_are_attributed_to_their_service() -> None:
    assert outage.tracker_for(redis.exceptions.TimeoutError()) is outage.REDIS
    assert outage.tracker_for(KafkaConnectionError()) is outage.KAFKA
    assert outage.tracker_for(TimeoutError()) is outage.EITHER
    assert outage.redact("redis://user:pw@host:6379/0") == "redis://host:6379/0"
    assert outage.redact("redis://host:6379/0") == "redis://host:6379/0"


async def test_registry_sync_raises_when_its_follower_died() -> None:
    # Before: a Redis error in the follower ended its task silently and every later
    # sync() (each batch naming an unknown experiment) waited for ever.
    registry = ExperimentRegistry("unused:9092", "defs", None, "p", None, "dlq")  # type: ignore[arg-type]
    tp = TopicPartition("defs", 0)

    class Consumer:
        async def end_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
            return {tp: 3}

    async def died() -> None:
        raise ValueError("a bug")

    registry._ends_client = Consumer()
    registry._partitions = [tp]
    registry._task = asyncio.create_task(died())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="stopped following"):
        await asyncio.wait_for(registry.sync(), timeout=5)


# --- metrics ----------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def dead(topic: str, offset: int, reason: str) -> dict[str, Any]:
    return {"k": "d", "t": topic, "o": offset, "out": orjson.dumps({"reason": reason}).decode()}


def test_observe_batch_counts_outcomes_and_dead_letters_by_reason() -> None:
    before = {name: sample("ab_worker_events_total", outcome=name) for name in metrics.OUTCOMES}
    reasons = ("malformed_json", "unknown_variant", "no_assignment")
    dead_before = {
        reason: sample("ab_worker_dead_letters_total", reason=reason) for reason in reasons
    }
    histogram_before = sample("ab_worker_batch_apply_seconds_count")
    by_partition = {
        0: [{"k": "a", "t": "a", "o": 1}, dead("a", 2, "malformed_json"), dead("c", 3, "unknown_variant")],
        1: [dead("a", 7, "malformed_json")],
        2: [{"k": "a", "t": "a", "o": 9}],
    }  # fmt: skip
    outcomes = [
        {"applied": 1, "replayed": 0, "duplicates": 2, "dead_lettered": 3,
         "conversions_expired": 1, "conversions_held": 1, "forwarded": 0, "outbox": 3},
        {"applied": 0, "replayed": 1, "dead_lettered": 0, "conversions_expired": 0},
        {"rollback": {"a": 4}},  # nothing applied in this partition
    ]  # fmt: skip
    observe_batch(by_partition, outcomes, 0.02)
    after = {name: sample("ab_worker_events_total", outcome=name) for name in metrics.OUTCOMES}
    assert {name: after[name] - before[name] for name in metrics.OUTCOMES} == {
        "applied": 1,
        "replayed": 1,
        "duplicate": 2,
        "dead_lettered": 2,  # the planner's two; the expired conversion was applied before
        "forwarded": 0,
    }
    assert {
        reason: sample("ab_worker_dead_letters_total", reason=reason) - dead_before[reason]
        for reason in reasons
    } == {"malformed_json": 1, "unknown_variant": 1, "no_assignment": 1}
    assert sample("ab_worker_batch_apply_seconds_count") == histogram_before + 1


def test_dead_letter_reasons_of_a_partly_replayed_batch_are_the_last_ones() -> None:
    commands = [dead("a", 1, "malformed_json"), {"k": "a"}, dead("a", 5, "schema_violation")]
    assert dead_letter_reasons(commands, 2) == {"malformed_json": 1, "schema_violation": 1}
    assert dead_letter_reasons(commands, 1) == {"schema_violation": 1}


async def test_batch_apply_time_is_the_attempts_own() -> None:
    async def attempt() -> float | None:
        await asyncio.sleep(0.05)
        return metrics.attempt_seconds()

    seconds = await asyncio.create_task(metrics.timed(attempt))
    assert seconds is not None and 0.04 <= seconds < 5


def test_a_metrics_port_in_use_is_a_logged_error_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer()
        server.start(port)
        server.stop()
    assert server.port is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"cannot serve on port {port}" in message for message in errors), errors


def test_metrics_port_zero_serves_nothing() -> None:
    server = MetricsServer()
    server.start(0)
    assert server.port is None

"""The worker's Prometheus metrics (prometheus_client), served on AB_WORKER_METRICS_PORT.

Counters are fed where the numbers arise: the pipeline after each applied batch
(`observe_batch`, from the counts the Lua sink returns), the retries
(worker/ingestion/outage.py), the registry (invalid definitions) and the snapshot job.
Gauges (consumer lag, held conversions, outbox depth, whether Redis and Kafka answer)
are set by the runtime's monitor every few seconds, from Kafka's end offsets and
Redis's applied offsets, whichever engine consumes. The README lists every metric.

The metrics live in prometheus_client's default registry, which also carries its
process and Python collectors; the read API keeps its own registry
(worker/api/metrics.py).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from worker.events.dead_letter import Reason

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTCOMES = ("applied", "replayed", "duplicate", "dead_lettered", "forwarded")
"""`outcome` label of ab_worker_events_total: what the sink did with each input message."""
_SINK_COUNTS = {
    "applied": "applied",
    "replayed": "replayed",
    "duplicate": "duplicates",
    "forwarded": "forwarded",
}

EVENTS = Counter(
    "ab_worker_events",
    "Input messages by what the sink did with them: applied (counted), replayed (at or "
    "below the partition's applied offset: skipped), duplicate (a conversion id seen "
    "before), dead_lettered (unusable), forwarded (misrouted, sent to its partition).",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "ab_worker_dead_letters",
    "Messages queued for the dead-letter topic, by reason.",
    ["reason"],
)
CONVERSIONS_HELD = Counter(
    "ab_worker_conversions_held",
    "Conversions that counted for no experiment when applied and were put on hold.",
)
HELD_CONVERSIONS = Gauge(
    "ab_worker_held_conversions",
    "Conversions on hold now (waiting for their visitor's assignment), all partitions.",
)
RETRIES = Counter(
    "ab_worker_retries",
    "Transient failures retried, by the service that failed (redis, kafka, or network "
    "when the error names neither).",
    ["service"],
)
BATCH_APPLY_SECONDS = Histogram(
    "ab_worker_batch_apply_seconds",
    "Time to apply one batch in Redis (every partition's script call and outbox flush).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SNAPSHOT_COMPUTE_SECONDS = Histogram(
    "ab_worker_snapshot_compute_seconds",
    "Time to compute one experiment's result snapshot.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
OUTBOX_DEPTH = Gauge(
    "ab_worker_outbox_depth",
    "Dead letters and forwards queued in Redis and not yet published, per partition.",
    ["partition"],
)
CONSUMER_LAG = Gauge(
    "ab_worker_consumer_lag",
    "Messages in Kafka not yet applied to Redis: end offset minus (applied offset + 1), "
    "per input topic and partition (the same figure from every worker).",
    ["topic", "partition"],
)
DEPENDENCY_UP = Gauge(
    "ab_worker_dependency_up",
    "1 when the service answered the worker's last probe, else 0.",
    ["service"],
)

for _outcome in OUTCOMES:
    EVENTS.labels(_outcome)
for _reason in Reason:
    DEAD_LETTERS.labels(_reason.value)
for _service in ("redis", "kafka", "network"):
    RETRIES.labels(_service)

_ATTEMPT_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "ab_worker_attempt_started", default=None
)


async def timed(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run one attempt, noting when it started for `attempt_seconds` (per task)."""
    _ATTEMPT_STARTED.set(time.perf_counter())
    return await attempt()


def attempt_seconds() -> float | None:
    """Seconds since the current `timed` attempt started (None outside of one)."""
    started = _ATTEMPT_STARTED.get()
    return None if started is None else time.perf_counter() - started


def observe_batch(
    by_partition: Mapping[int, Sequence[Mapping[str, Any]]],
    outcomes: Sequence[object],
    seconds: float | None,
) -> None:
    """Count an applied batch: `outcomes` are the sink's counts, in `by_partition` order."""
    if seconds is not None:
        BATCH_APPLY_SECONDS.observe(seconds)
    for commands, outcome in zip(by_partition.values(), outcomes, strict=True):
        if not isinstance(outcome, Mapping) or "rollback" in outcome:
            continue  # nothing of this partition was applied (it is read again)
        for outcome_label, name in _SINK_COUNTS.items():
            if outcome.get(name):
                EVENTS.labels(outcome_label).inc(outcome[name])
        expired = int(outcome.get("conversions_expired", 0))
        planned = int(outcome.get("dead_lettered", 0)) - expired
        if planned > 0:
            EVENTS.labels("dead_lettered").inc(planned)
            for reason, count in dead_letter_reasons(commands, planned).items():
                DEAD_LETTERS.labels(reason).inc(count)
        if expired:
            # Held conversions whose visitor never entered: dead-lettered by the script.
            DEAD_LETTERS.labels(Reason.NO_ASSIGNMENT.value).inc(expired)
        if outcome.get("conversions_held"):
            CONVERSIONS_HELD.inc(outcome["conversions_held"])


def dead_letter_reasons(commands: Sequence[Mapping[str, Any]], applied: int) -> Tally[str]:
    """The reasons of the planner's dead letters the sink applied (`applied` of them).

    The sink skips replayed messages, which are the first of each topic in the batch;
    when only some dead letters were applied, the last `applied` ones are counted, which
    is exact unless a partially replayed batch mixes dead letters of both topics (the
    total is exact either way).
    """
    reasons = [
        str(orjson.loads(command["out"]).get("reason", "unknown"))
        for command in commands
        if command.get("k") == "d"
    ]
    return Tally(reasons[len(reasons) - applied :] if applied < len(reasons) else reasons)


def set_lag(
    ends: Mapping[tuple[str, int], int], next_to_apply: Mapping[tuple[str, int], int]
) -> None:
    """Consumer lag per (topic, partition): Kafka's end offset minus the next to apply."""
    for (topic, partition), end in ends.items():
        lag = max(0, end - next_to_apply.get((topic, partition), 0))
        CONSUMER_LAG.labels(topic, str(partition)).set(lag)


def set_partition_gauges(held: int, outbox_depths: Mapping[int, int]) -> None:
    HELD_CONVERSIONS.set(held)
    for partition, depth in outbox_depths.items():
        OUTBOX_DEPTH.labels(str(partition)).set(depth)


class MetricsServer:
    """prometheus_client's HTTP server on a port of this process (0: none)."""

    def __init__(self) -> None:
        self._server: Any = None
        self.port: int | None = None

    def start(self, port: int) -> None:
        """Serve /metrics on every interface; a port in use is logged, not fatal."""
        if port == 0:
            log.info("metrics: not served (AB_WORKER_METRICS_PORT=0)")
            return
        try:
            self._server, _ = prometheus_client.start_http_server(port)
        except OSError as error:
            # Ingestion matters more than its metrics: keep counting, say so loudly.
            log.error(
                "metrics: cannot serve on port %d (%s); the worker runs without metrics. "
                "Set AB_WORKER_METRICS_PORT to a free port, or 0 to turn them off.",
                port,
                error,
            )
            return
        self.port = port
        log.info("metrics: Prometheus exposition on http://0.0.0.0:%d/metrics", port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

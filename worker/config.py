"""Configuration from environment variables, with the defaults of the design."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_REDIS = "redis://127.0.0.1:16379/0"
DEFAULT_API_WORKERS = 1
"""Measured on the 2-core development machine (README, read API latency): a second
uvicorn process did not serve cached results faster (the load generator, Redis and the
worker need the other core) and doubles every per-process cache and cold computation."""
DEFAULT_API_MAX_SCANS = 2
"""Per-visitor scans one API process runs at once: one per core of the development
machine; more only share the same cores (and the GIL) and finish later."""
DEFAULT_API_SCAN_WAIT_SECONDS = 10.0
"""How long a scan may wait for a slot before it is refused with a 503: a few scans'
time at a million visitors, far below the 24 s every query of a flood waited
unbounded (issue 16)."""
DEFAULT_REDIS_TIMEOUT_SECONDS = 5.0
"""How long a Redis connection or reply may take before the call raises TimeoutError
(retried by the worker, a 503 from the API): far above any single command's time (a
batch's script call takes milliseconds), far below a stall worth reporting."""
DEFAULT_REDIS_HEALTH_CHECK_SECONDS = 30
"""A connection idle this long is PINGed before its next command, so a connection
that died while idle (a Redis restart, a dropped NAT entry) is replaced, not used."""


def min_insync_replicas(replication_factor: int) -> int:
    """Replicas that must have a record before an acks=all send succeeds: all but one.

    For the topics the worker creates (AB_REPLICATION_FACTOR replicas) and for the local
    brokers' internal topics alike.

    One broker may then be lost (or restarted) while producing goes on, and no
    acknowledged record is lost with it; a single replica has no one to spare.
    """
    return max(1, replication_factor - 1)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from error


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be a number, got {raw!r}") from error


MIN_SESSION_TIMEOUT_SECONDS = 6.0
"""Kafka's group.min.session.timeout.ms: a broker refuses to join a shorter session."""


def _session_timeout(name: str, default: float) -> float:
    seconds = _float(name, default)
    if seconds < MIN_SESSION_TIMEOUT_SECONDS:
        raise ValueError(
            f"{name} must be at least {MIN_SESSION_TIMEOUT_SECONDS:g} (the brokers' "
            f"group.min.session.timeout.ms), got {seconds:g}"
        )
    return seconds


def namespace_env(name: str) -> dict[str, str]:
    """Environment of an isolated namespace on shared Kafka and Redis: every topic, the
    consumer group and the key prefix named after ``name`` (tests, benchmarks, or two
    deployments on one cluster)."""
    topics = ("assignments", "conversions", "experiments", "results", "winners", "dead-letter")
    env = {f"AB_TOPIC_{topic.upper().replace('-', '_')}": f"{name}.{topic}" for topic in topics}
    return env | {"AB_CONSUMER_GROUP": name, "AB_KEY_PREFIX": name}


TIMESTAMP_TYPES = ("LogAppendTime", "CreateTime")
"""`message.timestamp.type` of the input topics the worker creates, the default first.
The conversion hold runs in record timestamps: with LogAppendTime they are the broker's
clock when the record was appended; with CreateTime, each producer's own clock."""


def timestamp_type(raw: str | None) -> str:
    """The input topics' timestamp type named by `raw` (the default when empty)."""
    if raw is None or raw.strip() == "":
        return TIMESTAMP_TYPES[0]
    for name in TIMESTAMP_TYPES:
        if raw.strip().lower() == name.lower():
            return name
    raise ValueError(
        f"AB_INPUT_TIMESTAMP_TYPE must be one of {', '.join(TIMESTAMP_TYPES)}, got {raw!r}"
    )


def optional_flag(name: str, raw: str | None) -> bool | None:
    """A yes/no setting: True for 1/true/yes, False for 0/false/no, None when empty
    (the setting is then found out, as AB_REDIS_CLUSTER is by asking Redis)."""
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (or empty: found out), got {raw!r}")


def host_names(raw: str | None) -> frozenset[str]:
    """Host names of a comma-separated list, lower case (none when empty)."""
    return frozenset(host.strip().lower() for host in (raw or "").split(",") if host.strip())


ENGINES = ("aiokafka", "faust")
"""Ingestion engines, the default first: a plain aiokafka consumer loop
(worker/ingestion/consumer_loop.py) or faust (worker/ingestion/app.py); both drive the
same pipeline and count exactly. aiokafka is the default because it ingests 3-6 times
faster in the same benchmark run (BENCHMARKS.md): faust's per-event overhead bound it."""


def engine_name(raw: str | None, source: str = "AB_INGESTION_ENGINE") -> str:
    """The ingestion engine named by `raw` (the default when empty); a clear error otherwise."""
    if raw is None or raw.strip() == "":
        return ENGINES[0]
    name = raw.strip().lower()
    if name not in ENGINES:
        raise ValueError(f"{source} must be one of {', '.join(ENGINES)}, got {raw!r}")
    return name


@dataclass(frozen=True)
class Settings:
    """Every setting the worker, the CLI and the API read, by environment variable."""

    kafka_bootstrap_servers: str
    redis_url: str
    topic_assignments: str
    topic_conversions: str
    topic_experiments: str
    topic_results: str
    topic_winners: str
    topic_dead_letter: str
    partitions: int
    replication_factor: int
    consumer_group: str
    key_prefix: str
    batch_size: int
    batch_within_seconds: float
    dedup_window_days: int
    conversion_hold_seconds: int
    results_interval_seconds: float
    services_dir: Path
    cache_dir: Path
    ingestion_engine: str
    kafka_session_timeout_seconds: float = 10.0
    """How long the group waits for a silent worker before giving its partitions to
    another: a SIGKILLed worker's partitions stall this long (both engines)."""
    stop_grace_seconds: float = 10.0
    """How long a stopping worker waits for its batch in flight and its commit before
    it leaves without them (an unreachable Redis would hold it forever)."""
    outage_warn_seconds: float = 10.0
    """How often a worker waiting for Redis or Kafka says so again (worker/ingestion/outage.py)."""
    api_workers: int = DEFAULT_API_WORKERS
    api_key_cache_seconds: float = 5.0
    api_max_scans: int = DEFAULT_API_MAX_SCANS
    api_scan_wait_seconds: float = DEFAULT_API_SCAN_WAIT_SECONDS
    api_write_wait_seconds: float = 10.0
    worker_metrics_port: int = 9108
    max_future_skew_seconds: int = 86400
    input_timestamp_type: str = TIMESTAMP_TYPES[0]
    redis_timeout_seconds: float = DEFAULT_REDIS_TIMEOUT_SECONDS
    redis_health_check_seconds: int = DEFAULT_REDIS_HEALTH_CHECK_SECONDS
    redis_cluster: bool | None = None
    """AB_REDIS_CLUSTER: REDIS_URL names a Redis Cluster node (True) or a server alone
    (False); None: asked of the server (INFO cluster) when a client is made."""
    callback_allowed_hosts: frozenset[str] = frozenset()
    kafka_from_environment: bool = False
    """KAFKA_BOOTSTRAP_SERVERS was set: those brokers are used, none is provisioned."""
    redis_from_environment: bool = False
    """REDIS_URL was set: that Redis is used, none is provisioned."""

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment now (not at import time), so tests can set it per run."""
        env = os.environ.get
        return cls(
            kafka_bootstrap_servers=env("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_KAFKA,
            redis_url=env("REDIS_URL") or DEFAULT_REDIS,
            topic_assignments=env("AB_TOPIC_ASSIGNMENTS") or "ab.assignments",
            topic_conversions=env("AB_TOPIC_CONVERSIONS") or "ab.conversions",
            topic_experiments=env("AB_TOPIC_EXPERIMENTS") or "ab.experiments",
            topic_results=env("AB_TOPIC_RESULTS") or "ab.results",
            topic_winners=env("AB_TOPIC_WINNERS") or "ab.winners",
            topic_dead_letter=env("AB_TOPIC_DEAD_LETTER") or "ab.dead-letter",
            partitions=_int("AB_PARTITIONS", 12),
            replication_factor=_int("AB_REPLICATION_FACTOR", 1),
            consumer_group=env("AB_CONSUMER_GROUP") or "ab-results-worker",
            key_prefix=env("AB_KEY_PREFIX") or "ab",
            batch_size=_int("AB_BATCH_SIZE", 500),
            batch_within_seconds=_float("AB_BATCH_WITHIN_SECONDS", 0.2),
            dedup_window_days=_int("AB_DEDUP_WINDOW_DAYS", 7),
            conversion_hold_seconds=_int("AB_CONVERSION_HOLD_SECONDS", 3600),
            results_interval_seconds=_float("AB_RESULTS_INTERVAL", 10.0),
            services_dir=Path(env("AB_SERVICES_DIR") or Path.cwd() / ".services"),
            cache_dir=Path(env("AB_CACHE_DIR") or Path.cwd() / ".cache"),
            ingestion_engine=engine_name(env("AB_INGESTION_ENGINE")),
            kafka_session_timeout_seconds=_session_timeout(
                "AB_KAFKA_SESSION_TIMEOUT_SECONDS", 10.0
            ),
            stop_grace_seconds=_float("AB_STOP_GRACE_SECONDS", 10.0),
            outage_warn_seconds=_float("AB_OUTAGE_WARN_SECONDS", 10.0),
            api_workers=_int("AB_API_WORKERS", DEFAULT_API_WORKERS),
            api_key_cache_seconds=_float("AB_API_KEY_CACHE_SECONDS", 5.0),
            api_max_scans=_int("AB_API_MAX_SCANS", DEFAULT_API_MAX_SCANS),
            api_scan_wait_seconds=_float("AB_API_SCAN_WAIT_SECONDS", DEFAULT_API_SCAN_WAIT_SECONDS),
            api_write_wait_seconds=_float("AB_API_WRITE_WAIT_SECONDS", 10.0),
            worker_metrics_port=_int("AB_WORKER_METRICS_PORT", 9108),
            max_future_skew_seconds=_int("AB_MAX_FUTURE_SKEW_SECONDS", 86400),
            input_timestamp_type=timestamp_type(env("AB_INPUT_TIMESTAMP_TYPE")),
            redis_timeout_seconds=_float("AB_REDIS_TIMEOUT_SECONDS", DEFAULT_REDIS_TIMEOUT_SECONDS),
            redis_health_check_seconds=_int(
                "AB_REDIS_HEALTH_CHECK_SECONDS", DEFAULT_REDIS_HEALTH_CHECK_SECONDS
            ),
            redis_cluster=optional_flag("AB_REDIS_CLUSTER", env("AB_REDIS_CLUSTER")),
            callback_allowed_hosts=host_names(env("AB_CALLBACK_ALLOWED_HOSTS")),
            kafka_from_environment=bool(env("KAFKA_BOOTSTRAP_SERVERS")),
            redis_from_environment=bool(env("REDIS_URL")),
        )

    @property
    def input_topics(self) -> tuple[str, str]:
        """The co-partitioned event topics, keyed by visitor id."""
        return (self.topic_assignments, self.topic_conversions)

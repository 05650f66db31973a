"""The benchmark suite: provisions Kafka and Redis, runs every benchmark, prints one table.

    make bench                      # = .venv/bin/python bench/suite.py (1,000,000 visitors)
    .venv/bin/python bench/suite.py --visitors 10000000 --markdown out.md
    .venv/bin/python bench/suite.py --quick                     # a smoke run

Runs, one after the other so they do not share the CPU (N = --visitors):
  bench/ingestion.py    1,000,000 events over 100,000 visitors, 3 experiments, 12
                        partitions: ceiling, naive baseline, the aiokafka and faust
                        engines with 1 and 2 workers, the quixstreams contender
                        (exactly-once, RocksDB state), Redis bytes per visitor-experiment;
  bench/freshness.py    --prefill-visitors N: fills one experiment with N visitors
                        through the real Lua sink (Redis bytes per visitor: INFO
                        used_memory growth and summed MEMORY USAGE), times its snapshot
                        computation, then publish -> visible in a result snapshot, p50 /
                        p99, with that experiment in every snapshot; its keys are kept for
  bench/read_scale.py   --reuse: every read of BENCHMARKS.md on that fill, cold from
                        Redis (default result, counter queries, visitor scans), then the
                        fill's keys are deleted;
  bench/api_latency.py  the Mida result endpoint at N visitors (its own fill), 32
                        connections: default and filtered result; then, on the same fill,
                        --flood: the default result during 200 distinct scans, and how
                        the scans were answered (200, or 503 with Retry-After).
Each writes its figures as JSON; this script renders them beside the targets of issue
#16 (the figures of issue #8 beside them). A target stated at another scale than N says
so in its verdict. `--quick` runs small sizes (a smoke run, not figures to quote).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from read_scale import delete_prefix  # noqa: E402

from worker.config import Settings  # noqa: E402
from worker.store.connection import connect  # noqa: E402

MILLION = 1_000_000
Row = tuple[str, str, str, str]
Render = Callable[[dict[str, Any]], list[Row]]


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )  # fmt: skip
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )  # fmt: skip
    return f"{os.cpu_count()} cores (nproc), {memory_kb / 1024**2:.0f} GiB, {cpu}"


def run_step(
    name: str, command: list[str], output: Path, env: dict[str, str] | None = None
) -> tuple[dict[str, Any] | None, float]:
    """Run one benchmark script, streaming its progress; its JSON figures (None when it
    failed) and its seconds."""
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    result = subprocess.run([*command, "--json", str(output)], cwd=ROOT, env=env)
    seconds = time.monotonic() - started
    print(f"=== {name} took {seconds:.0f} s", flush=True)
    if result.returncode != 0 or not output.exists():
        print(f"=== {name} FAILED (exit {result.returncode}); its rows are missing", flush=True)
        return None, seconds
    figures: dict[str, Any] = json.loads(output.read_text())
    return figures, seconds


def number(value: Any, unit: str = "", digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def verdict(value: Any, passes: Callable[[float], bool]) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return "met" if passes(value) else "NOT met"


def scaled_verdict(value: Any, limit: float, stated_at: int, visitors: int) -> str:
    """The verdict of ``value <= limit`` for a target stated at ``stated_at`` visitors,
    measured at ``visitors``: a smaller experiment must meet it too; above that scale
    only a pass says something."""
    plain = verdict(value, lambda measured: measured <= limit)
    if visitors <= stated_at or plain != "NOT met":
        return plain
    return f"above it (the target is at {stated_at:,})"


def scale(visitors: int) -> str:
    return f"{visitors / MILLION:g}M" if visitors >= MILLION else f"{visitors:,}"


def ingestion_rows(figures: dict[str, Any]) -> list[Row]:
    ceiling, baseline = figures.get("ceiling_eps"), figures.get("baseline_eps")
    rows: list[Row] = [
        ("ingestion: ceiling (bare aiokafka, read + JSON decode)", number(ceiling, " ev/s"), "", ""),
        ("ingestion: naive baseline (faust, 1 Redis call per event)", number(baseline, " ev/s"), "", ""),
    ]  # fmt: skip
    engines: dict[str, dict[str, dict[str, Any]]] = figures.get("engines", {})
    peer = engines.get("quixstreams", {}).get("1")
    for engine, by_workers in engines.items():
        if engine == "quixstreams":
            continue
        for workers, measured in sorted(by_workers.items()):
            eps = measured.get("eps")
            rows.append((f"ingestion: {engine} engine, {workers} worker(s)", number(eps, " ev/s"), "", ""))  # fmt: skip
            if isinstance(eps, float | int) and ceiling and baseline:
                rows.append(
                    (f"  {engine} x{workers} / ceiling", f"{eps / ceiling:.1%}", ">= 50 %",
                     verdict(eps / ceiling, lambda r: r >= 0.5))
                )  # fmt: skip
                rows.append(
                    (f"  {engine} x{workers} / baseline", f"{eps / baseline:.1f}x", ">= 10x",
                     verdict(eps / baseline, lambda r: r >= 10))
                )  # fmt: skip
            if workers == "1" and peer and isinstance(eps, float | int):
                rows.append(
                    (f"  {engine} x1 / quixstreams x1", f"{eps / peer['eps']:.2f}x", "(reported)", "")
                )  # fmt: skip
    if peer:
        rows.append(
            ("ingestion: quixstreams 1 process (exactly-once, RocksDB)", number(peer.get("eps"), " ev/s"),
             "", "counts match" if peer.get("matched") else "counts DIFFER")
        )  # fmt: skip
    concurrent = figures.get("concurrent") or {}
    if concurrent:
        rows.append(
            (f"ingestion end to end, publishing meanwhile ({concurrent.get('engine')}, 1 worker)",
             number(concurrent.get("eps"), " ev/s"), "", "")
        )  # fmt: skip
    memory = next(
        (measured for by_workers in engines.values() for measured in by_workers.values()
         if "bytes_per_visitor_experiment" in measured),
        None,
    )  # fmt: skip
    if memory is not None:
        rows.append(
            ("  ingestion's keys per visitor-experiment (3 experiments, 10 events/visitor): "
             "used_memory / MEMORY USAGE",
             f"{number(memory.get('bytes_per_visitor_experiment'), ' B')} / "
             f"{number(memory.get('key_bytes_per_visitor_experiment'), ' B')}", "", "")
        )  # fmt: skip
    return rows


def memory_rows(visitors: int, used_memory: Any, key_bytes: Any) -> list[Row]:
    """Redis bytes per visitor-experiment of the N-visitor fill, against 120 B."""
    return [
        (f"Redis bytes per visitor-experiment, {scale(visitors)} fill (INFO used_memory growth)",
         number(used_memory, " B"), "<= 120 B", verdict(used_memory, lambda b: b <= 120)),
        ("  same, summed MEMORY USAGE of the fill's keys", number(key_bytes, " B"), "<= 120 B",
         verdict(key_bytes, lambda b: b <= 120)),
    ]  # fmt: skip


def freshness_rows(figures: dict[str, Any], visitors: int) -> list[Row]:
    limit = 2 * float(figures.get("interval_s", 10))
    rows: list[Row] = []
    if "prefill_visitors" in figures:
        prefilled = int(figures["prefill_visitors"])
        compute = figures.get("snapshot_compute_ms_median")
        if "prefill_seconds" in figures:
            rows.append(
                (f"fill of {scale(prefilled)} visitors through the Lua sink",
                 f"{number(figures.get('prefill_events'))} events in {number(figures['prefill_seconds'], ' s')}"
                 f" ({number(figures.get('prefill_events_per_s'), ' ev/s')})", "", "")
            )  # fmt: skip
            rows += memory_rows(
                prefilled, figures.get("redis_bytes_per_visitor"), figures.get("key_bytes_per_visitor")
            )  # fmt: skip
        rows.append(
            (f"snapshot compute (default result), {scale(prefilled)} visitors, median of 5",
             number(compute, " ms", 1), "<= 50 ms at 10M", scaled_verdict(compute, 50, 10 * MILLION, prefilled))
        )  # fmt: skip
    with_prefill = f", {scale(visitors)}-visitor experiment in every snapshot" if "prefill_visitors" in figures else ""  # fmt: skip
    rows += [
        (f"freshness p50 (interval {figures.get('interval_s')} s{with_prefill})", number(figures.get("p50_s"), " s", 2), "", ""),
        ("freshness p99", number(figures.get("p99_s"), " s", 2), f"<= {limit:g} s",
         verdict(figures.get("p99_s"), lambda s: s <= limit)),
    ]  # fmt: skip
    if figures.get("not_visible"):
        rows.append(
            ("  events never seen in a snapshot", number(figures["not_visible"]), "0", "NOT met")
        )
    return rows


def read_rows(figures: dict[str, Any]) -> list[Row]:
    """Each read of bench/read_scale.py against its target at the run's scale."""
    visitors = int(figures["visitors"])
    rows: list[Row] = []
    if "fill" in figures:  # read_scale filled for itself (no freshness fill to reuse)
        rows += memory_rows(
            visitors, figures["fill"].get("bytes_per_visitor"),
            figures.get("memory", {}).get("key_bytes_per_visitor"),
        )  # fmt: skip
    for read in figures.get("reads", []):
        measured = f"{number(read['median_ms'], ' ms')} (min {number(read['min_ms'], ' ms')})"
        median = read["median_ms"]
        if not read["current"]:
            rows.append((f"  same, {read['label'].split('(', 1)[1].rstrip(')')}", measured, "", ""))
            continue
        label = f"read at {scale(visitors)}, cold: {read['label']}"
        if read["scan"]:
            stated = MILLION if visitors <= MILLION else 10 * MILLION
            limit = 1000 if stated == MILLION else 10_000
            target = f"<= {limit // 1000} s at {scale(stated)}"
            rows.append((label, measured, target, scaled_verdict(median, limit, stated, visitors)))
        elif read["query"] == "default result":
            rows.append((label, measured, "<= 50 ms at 10M (snapshot)",
                         scaled_verdict(median, 50, 10 * MILLION, visitors)))  # fmt: skip
        else:
            rows.append((label, measured, "<= 300 ms at 1M",
                         scaled_verdict(median, 300, MILLION, visitors)))  # fmt: skip
    return rows


def api_rows(figures: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    visitors = number(figures.get("visitors"))
    for kind in ("default", "filtered"):
        measured = figures.get(kind, {})
        target = "<= 20 ms" if kind == "default" else ""
        rows.append(
            (f"API {kind} result, {visitors} visitors: req/s", number(measured.get("rps")), "", "")
        )
        rows.append((f"  {kind} p50", number(measured.get("p50_ms"), " ms", 1), "", ""))
        rows.append(
            (f"  {kind} p99", number(measured.get("p99_ms"), " ms", 1), target,
             verdict(measured.get("p99_ms"), lambda ms: ms <= 20) if target else "")
        )  # fmt: skip
        if measured.get("errors"):
            rows.append((f"  {kind} errors/timeouts", number(sum(measured["errors"].values())), "", ""))  # fmt: skip
    if "client_ceiling_rps" in figures:
        rows.append(
            ("  load client ceiling (trivial endpoint)", number(figures["client_ceiling_rps"], " req/s"), "", "")
        )  # fmt: skip
    return rows


def flood_rows(figures: dict[str, Any]) -> list[Row]:
    """The default result during the scan flood, and how the scans were answered."""
    flood = figures.get("flood", {})
    default = flood.get("default", {})
    scans: dict[str, dict[str, Any]] = flood.get("scans", {})
    p99 = default.get("p99_ms")
    rows: list[Row] = [
        (f"API default result during a flood of 200 distinct scans, {scale(int(figures['visitors']))} "
         f"visitors: p50", number(default.get("p50_ms"), " ms", 1), "", ""),
        ("  p99 during the flood", number(p99, " ms", 1), "<= 20 ms", verdict(p99, lambda ms: ms <= 20)),
        ("  flood took / default answers", f"{number(flood.get('flood_seconds'), ' s')} / "
         f"{number(default.get('requests'))}", "", ""),
        ("  scans answered (status: count)",
         ", ".join(f"{outcome}: {answered['count']}" for outcome, answered in scans.items()), "", ""),
    ]  # fmt: skip
    if default.get("errors"):
        rows.append(("  default result errors/timeouts", number(sum(default["errors"].values())), "0", "NOT met"))  # fmt: skip
    refused = scans.get("503")
    if refused is None:
        rows.append(("  excess scans refused 503 with Retry-After", "no 503", "every 503 has one",
                     "n/a (no scan waited past AB_API_SCAN_WAIT_SECONDS)"))  # fmt: skip
    else:
        values = ", ".join(refused["retry_after_values"]) or "none"
        rows.append(
            ("  excess scans refused 503 with Retry-After",
             f"{refused['retry_after']} of {refused['count']} (Retry-After: {values}; p50 {number(refused['p50_ms'], ' ms')})",
             "every 503 has one", verdict(refused["retry_after"], lambda n: n == refused["count"]))
        )  # fmt: skip
    return rows


def render(rows: list[Row]) -> str:
    header: Row = ("figure", "measured", "target", "verdict")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]  # fmt: skip
    lines.insert(1, " | ".join("-" * width for width in widths))
    return "\n".join(f"| {line} |" for line in lines)


def delete_prefixes(prefixes: list[str]) -> None:
    """Delete what a step kept for the next one, should that one not have run (the
    last step of each pair deletes it itself)."""

    async def delete() -> None:
        async with connect(Settings.from_env()) as redis:
            for prefix in prefixes:
                await delete_prefix(redis, prefix)

    asyncio.run(delete())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--visitors", type=int, help="N: the experiments' size (default 1,000,000; --quick 20,000)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["ingestion", "freshness", "reads", "api", "flood"],
    )
    args = parser.parse_args()
    python = sys.executable
    subprocess.run([python, "-m", "worker", "services", "up"], cwd=ROOT, check=True)
    if args.quick:
        sizes = {"events": 100_000, "entrants": 20_000, "baseline": 10_000,
                 "visitors": 20_000, "seconds": 20, "runs": 1, "load": 5}  # fmt: skip
    else:
        sizes = {"events": MILLION, "entrants": 100_000, "baseline": 200_000,
                 "visitors": MILLION, "seconds": 60, "runs": 3, "load": 10}  # fmt: skip
    visitors = args.visitors or sizes["visitors"]
    fresh_prefix, api_prefix = f"suite{os.getpid()}fresh", f"suite{os.getpid()}api"
    # A smoke run's scans are quick: a wait of 1 s still makes the flood refuse some.
    flood_env = {**os.environ, "AB_API_SCAN_WAIT_SECONDS": "1"} if args.quick else None
    started = datetime.now(UTC)
    rows: list[Row] = []
    notes: list[str] = []
    took: list[str] = []

    def step(name: str, command: list[str], to_rows: Render, env: dict[str, str] | None = None) -> dict[str, Any] | None:  # fmt: skip
        if name in args.skip:
            return None
        figures, seconds = run_step(name, command, Path(scratch) / f"{name}.json", env)
        took.append(f"{name} {seconds:.0f} s")
        if figures is None:
            rows.append((f"{name}: run failed", "n/a", "", ""))
            return None
        rows.extend(to_rows(figures))
        notes.extend(f"- {name}: {note}" for note in figures.get("notes", []))
        return figures

    with tempfile.TemporaryDirectory() as scratch:
        try:
            step("ingestion",
                 [python, "bench/ingestion.py", "--events", str(sizes["events"]), "--visitors",
                  str(sizes["entrants"]), "--baseline-events", str(sizes["baseline"]),
                  "--engines", "aiokafka,faust,quixstreams"],
                 ingestion_rows)  # fmt: skip
            fresh = step("freshness",
                         [python, "bench/freshness.py", "--seconds", str(sizes["seconds"]), "--rate", "2000",
                          "--prefill-visitors", str(visitors), "--prefix", fresh_prefix, "--keep"],
                         lambda figures: freshness_rows(figures, visitors))  # fmt: skip
            # The reads reuse the freshness fill; without one, read_scale fills for itself.
            reuse = (
                ["--reuse", fresh_prefix, "--experiment", "prefilled"] if fresh else ["--memory"]
            )
            step("reads",
                 [python, "bench/read_scale.py", "--visitors", str(visitors), "--runs", str(sizes["runs"]),
                  "--hash-runs", "0", *reuse],
                 read_rows)  # fmt: skip
            step("api",
                 [python, "bench/api_latency.py", "--visitors", str(visitors), "--seconds", str(sizes["load"]),
                  "--prefix", api_prefix, "--keep"],
                 api_rows)  # fmt: skip
            step("flood",
                 [python, "bench/api_latency.py", "--visitors", str(visitors), "--prefix", api_prefix, "--flood"],
                 flood_rows, flood_env)  # fmt: skip
        finally:
            delete_prefixes([fresh_prefix, api_prefix])
    if args.quick:
        notes.append("- flood: AB_API_SCAN_WAIT_SECONDS=1 (a smoke run's scans are quick)")
    notes.append(f"- durations: {', '.join(took)}")
    table = "\n".join([render(rows), "", "Notes:", *notes])
    heading = (
        f"Benchmarks of {started:%Y-%m-%d %H:%M} UTC on {machine()}, "
        f"{scale(visitors)} visitors, {(datetime.now(UTC) - started).total_seconds() / 60:.0f} min\n"
        f"command: {' '.join(['bench/suite.py', *sys.argv[1:]])}"
    )
    print(f"\n{heading}\n\n{table}")
    if args.markdown:
        args.markdown.write_text(f"{heading}\n\n{table}\n")


if __name__ == "__main__":
    main()

"""The benchmark suite: provisions Kafka and Redis, runs every benchmark, prints one table.

    make bench                      # = .venv/bin/python bench/suite.py
    .venv/bin/python bench/suite.py --quick --markdown out.md

Runs, one after the other so they do not share the CPU:
  bench/ingestion.py    1,000,000 events over 100,000 visitors, 3 experiments, 12
                        partitions: ceiling, naive baseline, each engine with 1 and 2
                        workers, Redis bytes per visitor-experiment;
  bench/freshness.py    publish -> visible in a result snapshot, p50 / p99;
  bench/api_latency.py  Mida result endpoint at 1,000,000 visitors, 32 connections.
Each writes its figures as JSON; this script renders them against the targets of
issue #8. `--quick` runs small sizes (a smoke run, not figures to quote).
"""

from __future__ import annotations

import argparse
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
Row = tuple[str, str, str, str]


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )  # fmt: skip
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )  # fmt: skip
    return f"{os.cpu_count()} cores (nproc), {memory_kb / 1024**2:.0f} GiB, {cpu}"


def run_step(name: str, command: list[str], output: Path) -> dict[str, Any] | None:
    """Run one benchmark script, streaming its progress; its JSON figures, or None."""
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    result = subprocess.run([*command, "--json", str(output)], cwd=ROOT)
    print(f"=== {name} took {time.monotonic() - started:.0f} s", flush=True)
    if result.returncode != 0 or not output.exists():
        print(f"=== {name} FAILED (exit {result.returncode}); its rows are missing", flush=True)
        return None
    figures: dict[str, Any] = json.loads(output.read_text())
    return figures


def number(value: Any, unit: str = "", digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def verdict(value: Any, passes: Callable[[float], bool]) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return "met" if passes(value) else "NOT met"


def ingestion_rows(figures: dict[str, Any]) -> list[Row]:
    ceiling, baseline = figures.get("ceiling_eps"), figures.get("baseline_eps")
    rows: list[Row] = [
        ("ingestion: ceiling (bare aiokafka, read + JSON decode)", number(ceiling, " ev/s"), "", ""),
        ("ingestion: naive baseline (faust, 1 Redis call per event)", number(baseline, " ev/s"), "", ""),
    ]  # fmt: skip
    memory: dict[str, Any] = {}
    for engine, by_workers in figures.get("engines", {}).items():
        for workers, measured in sorted(by_workers.items()):
            eps = measured.get("eps")
            memory = memory or measured
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
    concurrent = figures.get("concurrent") or {}
    if concurrent:
        rows.append(
            (f"ingestion end to end, publishing meanwhile ({concurrent.get('engine')}, 1 worker)",
             number(concurrent.get("eps"), " ev/s"), "", "")
        )  # fmt: skip
    if memory:
        size = memory.get("bytes_per_visitor_experiment")
        rows.append(
            ("Redis bytes per visitor-experiment (INFO used_memory)", number(size, " B"),
             "<= 120 B", verdict(size, lambda b: b <= 120))
        )  # fmt: skip
        rows.append(
            ("  same, summed MEMORY USAGE of the keys",
             number(memory.get("key_bytes_per_visitor_experiment"), " B"), "", "")
        )  # fmt: skip
    return rows


def freshness_rows(figures: dict[str, Any]) -> list[Row]:
    limit = 2 * float(figures.get("interval_s", 10))
    return [
        (f"freshness p50 (interval {figures.get('interval_s')} s)", number(figures.get("p50_s"), " s", 2), "", ""),
        ("freshness p99", number(figures.get("p99_s"), " s", 2), f"<= {limit:g} s",
         verdict(figures.get("p99_s"), lambda s: s <= limit)),
    ]  # fmt: skip


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
            rows.append((f"  {kind} errors/timeouts", number(measured["errors"]), "", ""))
    if "client_ceiling_rps" in figures:
        rows.append(
            ("  load client ceiling (trivial endpoint)", number(figures["client_ceiling_rps"], " req/s"), "", "")
        )  # fmt: skip
    return rows


def render(rows: list[Row]) -> str:
    header: Row = ("figure", "measured", "target", "verdict")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]  # fmt: skip
    lines.insert(1, " | ".join("-" * width for width in widths))
    return "\n".join(f"| {line} |" for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--skip", action="append", default=[], choices=["ingestion", "freshness", "api"]
    )
    args = parser.parse_args()
    python = sys.executable
    subprocess.run([python, "-m", "worker", "services", "up"], cwd=ROOT, check=True)
    if args.quick:
        sizes = {"events": "100000", "visitors": "20000", "api": "100000", "seconds": "20"}
    else:
        sizes = {"events": "1000000", "visitors": "100000", "api": "1000000", "seconds": "60"}
    steps: list[tuple[str, list[str], Callable[[dict[str, Any]], list[Row]]]] = [
        ("ingestion",
         [python, "bench/ingestion.py", "--events", sizes["events"], "--visitors", sizes["visitors"]],
         ingestion_rows),
        ("freshness",
         [python, "bench/freshness.py", "--seconds", sizes["seconds"], "--rate", "2000"],
         freshness_rows),
        ("api", [python, "bench/api_latency.py", "--visitors", sizes["api"]], api_rows),
    ]  # fmt: skip
    started = datetime.now(UTC)
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, command, to_rows in steps:
            if name in args.skip:
                continue
            figures = run_step(name, command, Path(scratch) / f"{name}.json")
            if figures is None:
                rows.append((f"{name}: run failed", "n/a", "", ""))
                continue
            rows.extend(to_rows(figures))
            notes.extend(f"- {name}: {note}" for note in figures.get("notes", []))
    table = "\n".join([render(rows), "", "Notes:", *notes])
    heading = (
        f"Benchmarks of {started:%Y-%m-%d %H:%M} UTC on {machine()}\n"
        f"command: {' '.join(['bench/suite.py', *sys.argv[1:]])}"
    )
    print(f"\n{heading}\n\n{table}")
    if args.markdown:
        args.markdown.write_text(f"{heading}\n\n{table}\n")


if __name__ == "__main__":
    main()

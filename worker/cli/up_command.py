"""`python -m worker up`: the whole system on this machine, for `make run`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from worker.config import ENGINES, Settings
from worker.services import provision

PROCESSES = (
    # info: start-up, partition assignments, the 60 s progress line and notable batches
    # (dead letters, duplicates) are what someone watching the demo wants to read.
    ("worker", ["run", "--loglevel", "info"]),
    ("api", ["api"]),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start everything: Kafka, Redis, the worker, the read API and demo traffic",
        description="Provisions the local services (unless the environment names them), starts "
        "the worker and the API, publishes the demo experiments and sends demo traffic until "
        "Ctrl-C. Logs go to AB_SERVICES_DIR/logs.",
    )
    parser.add_argument("--no-demo", action="store_true", help="start no demo traffic")
    parser.add_argument("--rate", type=float, default=20.0, help="demo visitors per second")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        help="the worker's ingestion engine (default: AB_INGESTION_ENGINE, else aiokafka)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    for line in provision.up(settings):
        print(line, flush=True)
    log_dir = settings.services_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = list(PROCESSES)
    if args.engine is not None:
        commands = [
            (name, [*command, "--engine", args.engine] if name == "worker" else command)
            for name, command in commands
        ]
    if not args.no_demo:
        commands.append(("demo", ["demo", "--rate", str(args.rate)]))
    children = [_start(name, command, log_dir) for name, command in commands]
    print()
    print("Running. Look at the results with:")
    print("  .venv/bin/python -m worker results demo-checkout")
    print("  .venv/bin/python -m worker keys create --project demo   # then, with that key:")
    print(
        "  curl -H 'Authorization: Bearer KEY' http://127.0.0.1:8000/v2/project/demo/experiment/demo-checkout/result"
    )
    print(
        f"Logs: {log_dir}. Ctrl-C stops the worker, the API and the demo (Kafka and Redis keep running)."
    )
    try:
        while True:
            for name, process in children:
                if process.poll() is not None:
                    print(
                        f"{name} exited with code {process.returncode}; see {log_dir / (name + '.log')}"
                    )
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        for _, process in children:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in children:
            process.wait(timeout=60)


def _start(name: str, command: list[str], log_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    log = (log_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    print(f"{name}: started (pid {process.pid}), log {log_dir / (name + '.log')}", flush=True)
    return name, process

"""False winners of A/A experiments run through the worker's decision path, per config.

    .venv/bin/python bench/aa_decisions.py --replications 200            # all 72 configs
    .venv/bin/python bench/aa_decisions.py --replications 50 --configs covering

Every arm converts at the same rate; each replication is 50 looks of about 600 visitors
per arm, with ``result_document`` and ``decide`` run at every look as the snapshot job
runs them (``tests/aa_decisions.py``). Prints a Markdown table: per config the
replications with a false winner, the rate, and the bound alpha + 3 binomial standard
errors that the CI test (``tests/unit/test_decision_path_aa_simulation.py``) asserts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.aa_decisions import FULL_FACTORIAL, Outcome, margin, run  # noqa: E402
from tests.unit.test_decision_path_aa_simulation import COVERING  # noqa: E402


def main() -> int:
    """Run the configs, print the table; exit status 1 when a config exceeds its bound."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200, help="per config")
    parser.add_argument("--configs", choices=("all", "covering"), default="all")
    args = parser.parse_args()
    configs = FULL_FACTORIAL if args.configs == "all" else COVERING
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    print("| arms | engine | direction | horizon | base rate | false winners | rate | bound |")
    print("|---:|---|---|---|---:|---:|---:|---:|")
    for config in configs:
        outcome = run(config, args.replications)
        outcomes.append(outcome)
        flag = " **over**" if outcome.rate > outcome.bound else ""
        print(
            f"| {config.arms} | {config.engine} | {config.direction} | {config.horizon} "
            f"| {config.rate:.0%} | {outcome.false_winners} / {outcome.replications} "
            f"| {outcome.rate:.3f}{flag} | {outcome.bound:.3f} |",
            flush=True,
        )
    total = sum(o.replications for o in outcomes)
    false_winners = sum(o.false_winners for o in outcomes)
    level = outcomes[0].alpha
    print(
        f"\nPooled: {false_winners} / {total} = {false_winners / total:.4f} "
        f"(bound {level + margin(total, level):.4f}); "
        f"{len(configs)} configs in {time.perf_counter() - started:.0f} s"
    )
    return 1 if any(o.rate > o.bound for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

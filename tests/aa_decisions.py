"""A/A experiments run through the worker's decision path, look after look (pure, seeded).

Each interval the snapshot job builds the default result document from per-variant
totals (``result_document``) and takes the decisions it implies from the previous
decision state (``decide``), storing the new state for the next interval. Here the
same two functions are driven the same way, without Redis or Kafka: every arm
converts at the same true rate, so any ``winner_declared`` event is a false winner.

Shared by ``tests/unit/test_decision_path_aa_simulation.py`` (a covering design, for
CI) and ``bench/aa_decisions.py`` (the full factorial, for the README).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import product

import numpy as np

from worker.events.experiment import ExperimentDefinition
from worker.results.contract import Snapshot, WinnerDeclared
from worker.results.decisions import DecisionState, decide
from worker.results.experiment_result import alpha, result_document
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals

LOOKS = 50
"""Results intervals per replication."""
PER_LOOK = 600
"""Visitors per arm and look, on average: each look's visitors are split at random."""
PLANNED = 14_400
"""Fixed-horizon sample per arm: 24 looks' worth, so the one read falls near look 25."""
START = datetime(2026, 11, 20, tzinfo=UTC)

ARMS = (2, 5, 20)
ENGINES = ("frequentist", "bayesian")
DIRECTIONS = ("two_sided", "greater", "less")
HORIZONS = ("sequential", "fixed")
RATES = (0.01, 0.05)


@dataclass(frozen=True)
class Config:
    """One A/A setting: every arm converts at ``rate``."""

    arms: int
    engine: str
    direction: str
    horizon: str
    rate: float

    @property
    def name(self) -> str:
        """A readable id, e.g. ``20arms-bayesian-less-fixed-1%``."""
        return f"{self.arms}arms-{self.engine}-{self.direction}-{self.horizon}-{self.rate:.0%}"

    def definition(self) -> ExperimentDefinition:
        """The experiment: equal weights, one conversion goal, default threshold (95 %)."""
        stats: dict[str, object] = {
            "engine": self.engine,
            "test_direction": self.direction,
            "sequential": self.horizon == "sequential",
        }
        if self.horizon == "fixed":
            stats["planned_sample_size"] = PLANNED
        return ExperimentDefinition.model_validate(
            {
                "id": "aa",
                "project_key": "sim",
                "name": "A/A",
                "status": "live",
                "variants": [
                    {"id": f"v{i}", "name": f"V{i}", "is_control": i == 0, "traffic_weight": 1}
                    for i in range(self.arms)
                ],
                "goals": [{"key": "buy", "name": "Buy", "primary": True}],
                "stats": stats,
            }
        )


FULL_FACTORIAL = [Config(*levels) for levels in product(ARMS, ENGINES, DIRECTIONS, HORIZONS, RATES)]


def margin(replications: int, level: float = 0.05) -> float:
    """Three binomial standard errors of a rate equal to ``level`` over the replications."""
    return 3.0 * math.sqrt(level * (1.0 - level) / replications)


def seed_of(config: Config) -> int:
    """A seed of the config's own, stable across runs and Python versions."""
    return zlib.crc32(config.name.encode())


def simulate(config: Config, replications: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (visitors, conversions) per replication, look and arm, all vectorised."""
    rng = np.random.default_rng(seed)
    arrivals = rng.multinomial(
        PER_LOOK * config.arms, [1.0 / config.arms] * config.arms, size=(replications, LOOKS)
    )
    conversions = rng.binomial(arrivals, config.rate)
    return arrivals.cumsum(axis=1), conversions.cumsum(axis=1)


def declares_a_winner(
    definition: ExperimentDefinition, visitors: np.ndarray, conversions: np.ndarray
) -> bool:
    """Whether one replication (arrays of looks x arms) ever declares a winner.

    Stops at the first declaration. A fixed-horizon test also stops once it has been
    read (the state records the passing variants): later looks only report that read,
    and a winner it did not declare then can never be declared (an SRM alarm, the only
    thing that holds back a passing variant, is sticky).
    """
    state = DecisionState()
    for look in range(len(visitors)):
        rows = [
            VariantTotals(f"v{arm}", visitors=int(n), conversions=int(c))
            for arm, (n, c) in enumerate(zip(visitors[look], conversions[look], strict=True))
        ]
        document = result_document(definition, {"buy": QueryTotals(rows)})
        snapshot = Snapshot(
            document=document,
            applied_offsets={},
            computed_at=START + timedelta(minutes=look),
            interval_index=look,
            computed_by="aa:1",
        )
        decisions = decide(definition, state, snapshot)
        if any(isinstance(event, WinnerDeclared) for event in decisions.events):
            return True
        state = decisions.state
        if state.fixed_horizon_passing is not None:
            return False
    return False


@dataclass(frozen=True)
class Outcome:
    """False winners of one config over its replications."""

    config: Config
    replications: int
    false_winners: int
    alpha: float

    @property
    def rate(self) -> float:
        """Share of replications with a false winner."""
        return self.false_winners / self.replications

    @property
    def bound(self) -> float:
        """Alpha plus :func:`margin` for the replications run."""
        return self.alpha + margin(self.replications, self.alpha)


def run(config: Config, replications: int) -> Outcome:
    """``replications`` seeded A/A experiments of ``config`` through the decision path."""
    definition = config.definition()
    visitors, conversions = simulate(config, replications, seed_of(config))
    false_winners = sum(
        declares_a_winner(definition, visitors[r], conversions[r]) for r in range(replications)
    )
    return Outcome(config, replications, false_winners, alpha(definition))

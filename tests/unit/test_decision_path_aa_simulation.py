"""A/A experiments through the real decision path: false winners at most alpha (issue 15).

Every arm converts at the same rate; each replication is 50 looks of about 600 visitors
per arm (randomly split, so the SRM check runs for real), and at every look the worker's
own ``result_document`` and ``decide`` run, the decision state carried from look to
look as the snapshot job carries it (``tests/aa_decisions.py``). A replication with any
``winner_declared`` event has a false winner. Fixed-horizon tests plan 14,400 visitors
per arm, reached near look 25, where they are read once.

The full factorial (3 arm counts x 2 engines x 3 directions x 2 horizons x 2 base rates,
72 configs) takes minutes; ``bench/aa_decisions.py`` runs it and the README quotes it.
CI runs a covering design of 12 configs: every (engine, direction, horizon) combination
once, so every pair of those three appears; 20 arms with both engines and both horizons;
and the arm counts and base rates spread so that every level appears with every level
of every other factor, except 20 arms with ``greater`` (20 arms are ten times the cost
of 2). Replications per config fall with the arm count (64, 48, 24) to fit well under a
minute.

Each config's rate must be at most alpha plus three binomial standard errors of alpha
for its replication count (0.082, 0.094 and 0.133 above 0.05); all configs pooled must
be at most alpha plus three standard errors for the pooled count (608: 0.027), which
holds the whole design to a tighter bound than any one config.
"""

from __future__ import annotations

from functools import cache

import pytest

from tests.aa_decisions import Config, Outcome, margin, run

REPLICATIONS = {2: 64, 5: 48, 20: 24}

COVERING = [
    Config(20, "frequentist", "less", "sequential", 0.01),
    Config(20, "bayesian", "two_sided", "fixed", 0.05),
    Config(2, "frequentist", "greater", "sequential", 0.05),
    Config(2, "frequentist", "two_sided", "fixed", 0.01),
    Config(2, "bayesian", "less", "sequential", 0.01),
    Config(2, "bayesian", "greater", "fixed", 0.05),
    Config(2, "bayesian", "two_sided", "sequential", 0.05),
    Config(5, "frequentist", "greater", "fixed", 0.01),
    Config(5, "frequentist", "two_sided", "sequential", 0.05),
    Config(5, "frequentist", "less", "fixed", 0.05),
    Config(5, "bayesian", "less", "fixed", 0.01),
    Config(5, "bayesian", "greater", "sequential", 0.01),
]


@cache
def outcome(config: Config) -> Outcome:
    return run(config, REPLICATIONS[config.arms])


def test_the_design_covers_every_level_and_every_pair_of_engine_direction_horizon() -> None:
    assert {(c.engine, c.direction, c.horizon) for c in COVERING} == {
        (e, d, h)
        for e in ("frequentist", "bayesian")
        for d in ("two_sided", "greater", "less")
        for h in ("sequential", "fixed")
    }
    assert {(c.arms, c.engine) for c in COVERING} >= {(20, "frequentist"), (20, "bayesian")}
    assert {(c.arms, c.rate) for c in COVERING} == {
        (a, r) for a in (2, 5, 20) for r in (0.01, 0.05)
    }
    assert {(c.arms, c.horizon) for c in COVERING} == {
        (a, h) for a in (2, 5, 20) for h in ("sequential", "fixed")
    }


@pytest.mark.parametrize("config", COVERING, ids=lambda config: config.name)
def test_false_winners_at_most_alpha(config: Config) -> None:
    result = outcome(config)
    assert result.rate <= result.bound, (
        f"{config.name}: {result.false_winners} false winners in {result.replications} "
        f"A/A replications ({result.rate:.3f} > {result.bound:.3f})"
    )


def test_false_winners_pooled_over_the_design_at_most_alpha() -> None:
    results = [outcome(config) for config in COVERING]
    replications = sum(r.replications for r in results)
    false_winners = sum(r.false_winners for r in results)
    level = results[0].alpha
    assert false_winners / replications <= level + margin(replications, level), [
        (r.config.name, r.false_winners) for r in results if r.false_winners
    ]

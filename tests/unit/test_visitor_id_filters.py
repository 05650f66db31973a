"""Visitor-id conditions by numpy string functions (``conditions.visitor_id_mask``)
against the scalar predicate every other column uses, on ids chosen to meet its edge
cases: letters of either case, ids that read as numbers (``007``, ``1e3``, ``1_0``,
``-5``), ``inf`` and ``nan``, and missing rows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from worker.results.columns import Column, distinct_column, encode
from worker.results.conditions import column_mask, visitor_id_mask
from worker.results.query import Value

ALPHABET = "0123456789eE_-aAbBzZ"
EDGE_IDS = [
    "007", "7", "7e0", "70e-1", "1_0", "10", "-5", "-5e-0", "1__0", "_1", "1e", "e1",
    "inf", "INF", "Infinity", "nan", "NaN", "-inf", "ABC", "abc", "AbC", "abc-1",
    "0", "00", "-0", "1e400", "1E3", "1000",
]  # fmt: skip
TARGETS: list[Value] = [
    "abc", "ABC", "aBc", "7", 7, 7.0, "007", 10, "10", 1000.0, "1e3", 0, "-0", -5, "inf",
    float("inf"), "e", "b_", True, False, "straße", "1_0", "nan", "INF",
]  # fmt: skip


def ids(seed: int) -> list[str]:
    rng = random.Random(seed)
    made = {"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 6))) for _ in range(3_000)}
    return sorted(made | set(EDGE_IDS))


@pytest.mark.parametrize("operator", ["==", "!="])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_id_mask_is_the_scalar_predicates(operator: str, seed: int) -> None:
    values = ids(seed)
    # Every id once, in a shuffled row order, and rows without an id (code -1).
    rows = np.random.default_rng(seed).permutation(np.append(np.arange(len(values)), [-1, -1]))
    column = Column(rows, list(values))
    for target in TARGETS:
        expected = column_mask(column, operator, target)
        got = visitor_id_mask(column, operator, target)
        assert got.dtype == bool
        assert got.tolist() == expected.tolist(), (operator, target)
    # The ids meet numbers: 007 equals 7, 7e0, 70e-1 and 007 itself, at least.
    assert visitor_id_mask(column, "==", "007").sum() >= 4


def test_distinct_ids_encode_as_encode_does() -> None:
    values = ["b", "", "a", "c", "", "A"]
    fast, slow = distinct_column(values), encode(values, len(values))
    assert fast.codes.tolist() == slow.codes.tolist() == [0, -1, 1, 2, -1, 3]
    assert fast.values == slow.values
    assert distinct_column([]).codes.size == 0

"""Visitor-id conditions by numpy string functions (``conditions.visitor_id_mask``)
against the scalar predicate every other column uses, on ids chosen to meet its edge
cases: letters of either case, ids that read as numbers (``007``, ``1e3``, ``1_0``,
``-5``), ``inf`` and ``nan``, and missing rows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from worker.results.columns import Column, distinct_column, encode
from worker.results.conditions import (
    column_mask,
    id_spellings,
    scalar_predicate,
    visitor_id_mask,
)
from worker.results.planning import visitor_ids_to_read
from worker.results.query import Condition, ResultQuery, Value

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


@pytest.mark.parametrize("seed", [1, 2])
def test_the_spellings_of_a_target_are_the_ids_equal_to_it(seed: int) -> None:
    listed: list[Value] = [*TARGETS, "P42", "visitor-11-3", "x", "ß"]
    # Pairs, not a dict: 0 and False, 1 and True are one key of a dict.
    spelled = [(target, id_spellings(target)) for target in listed]
    universe = set(ids(seed)) | {i for _, found in spelled if found for i in found}
    for target, spellings in spelled:
        if spellings is not None:
            equal = scalar_predicate("==", target)
            assert {i for i in universe if equal(i)} == spellings, target
    assert id_spellings("P42") == {"p42", "P42"}
    assert id_spellings("ß") == {"ss", "sS", "Ss", "SS"}  # "ß" folds to "ss"
    assert len(id_spellings(True) or ()) == 16
    assert sum(found is not None for _, found in spelled) >= 12
    # Numbers (042 and 42 are equal), texts no id folds to, and too many letters.
    unlisted: list[Value] = [7, "7", "1e3", "1_0", "", "a.b", "straße-und-weg"]
    for other in unlisted:
        assert id_spellings(other) is None, other


def test_a_scan_reads_the_ids_of_its_equalities_only_when_they_can_be_listed() -> None:
    def needs(*groups: list[Condition]) -> bool | frozenset[str]:
        return visitor_ids_to_read(ResultQuery(segment=tuple(tuple(g) for g in groups)))

    device = Condition(field="device", operator="==", value="mobile")
    assert needs([device]) is False
    assert needs([c("==", "P42"), c("==", "q_1")], [device]) == {"p42", "P42", "q_1", "Q_1"}
    assert needs([c("==", "P42")], [c("!=", "P43")]) == {"p42", "P42", "p43", "P43"}
    assert needs([c("==", "P42")], [c("contains", "4")]) is True
    assert needs([c("==", "P42"), c("==", 42)]) is True
    assert needs([c("!=", "abcdefghi")]) is True  # 512 spellings
    assert needs([c("exists", None)]) is True


def c(operator: str, value: Value | None) -> Condition:
    return Condition.model_validate({"field": "visitor_id", "operator": operator, "value": value})

"""Per-visitor sums of the Lua sink on tiny examples computed by hand (issue 15: 6, 9, 10, 11).

Visitor-clustered visit metrics, revenue per order, caps and the CUPED covariate, each
read back as VariantTotals through the product's counters path. The definitions are
test_sink_read_order's: x1 caps `buy` revenue at 120 and `view` events at 2 and takes
one day before entry as the covariate; x2 has no revenue cap and CUPED off.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.test_batch_sink import visitors_in_one_partition
from tests.integration.test_sink_read_order import (
    DAY,
    PUBLISHED,
    Sink,
    assignment,
    conversion,
    sink,
)

pytestmark = pytest.mark.integration
__all__ = ["sink"]

MINUTE = timedelta(minutes=1)


def pick(row: dict[str, float], *names: str) -> dict[str, float]:
    return {name: row[name] for name in names}


async def test_visits_and_converted_visits_are_summed_per_visitor_with_their_products(
    sink: Sink,
) -> None:
    partition, (one, two) = visitors_in_one_partition(2)
    await sink.apply(
        partition,
        [
            (0, assignment(one, "x2", "1", DAY, PUBLISHED, visit="s0")),
            (0, conversion(one, DAY + MINUTE, PUBLISHED + 1, 10.0, visit="s0")),
            # a second visit after the first conversion: the products grow by C, E, R
            (1, assignment(one, "x2", "1", DAY + 60 * MINUTE, PUBLISHED + 2, visit="s1")),
            (1, conversion(one, DAY + 61 * MINUTE, PUBLISHED + 3, 5.0, visit="s1")),
            (2, conversion(one, DAY + 62 * MINUTE, PUBLISHED + 4, 5.0, visit="s1")),
            (2, assignment(two, "x2", "1", DAY, PUBLISHED + 5, visit="s0")),
            (3, conversion(two, DAY + MINUTE, PUBLISHED + 6, goal="view", visit="s0")),
        ],
    )
    rows = (await sink.totals())["x2"]
    # one: V = 2, C = 2, E = 3, R = 20; two: V = 1 and no `buy` event
    assert pick(
        rows["buy"]["1"],
        "cohort_visits", "cohort_visits_sum_squares", "converted_visits",
        "converted_visits_sum_squares", "visits_converted_visits_product",
        "visits_goal_events_product", "visits_revenue_product",
    ) == {
        "cohort_visits": 3, "cohort_visits_sum_squares": 5, "converted_visits": 2,
        "converted_visits_sum_squares": 4, "visits_converted_visits_product": 4,
        "visits_goal_events_product": 6, "visits_revenue_product": 40.0,
    }  # fmt: skip
    # two's one view in its one visit: V C = V E = 1
    assert pick(
        rows["view"]["1"], "visits_converted_visits_product", "visits_goal_events_product"
    ) == {"visits_converted_visits_product": 1, "visits_goal_events_product": 1}


async def test_orders_are_summed_squared_and_with_revenue_per_visitor(sink: Sink) -> None:
    partition, (one, two) = visitors_in_one_partition(2)
    await sink.apply(
        partition,
        [
            (0, assignment(one, "x2", "0", DAY, PUBLISHED)),
            (1, assignment(two, "x2", "0", DAY, PUBLISHED + 1)),
            (0, conversion(one, DAY + MINUTE, PUBLISHED + 2, 10.0)),
            (1, conversion(one, DAY + 2 * MINUTE, PUBLISHED + 3, 20.0)),
            (2, conversion(two, DAY + MINUTE, PUBLISHED + 4, 5.0)),
            (3, conversion(two, DAY + 2 * MINUTE, PUBLISHED + 5, None)),  # no order
        ],
    )
    row = (await sink.totals())["x2"]["buy"]["0"]
    # one: O = 2, R = 30; two: O = 1, R = 5
    assert pick(row, "orders", "revenue", "orders_sum_squares", "revenue_orders_product") == {
        "orders": 3,
        "revenue": 35.0,
        "orders_sum_squares": 5,
        "revenue_orders_product": 65.0,
    }


async def test_a_cap_bounds_each_visitors_counted_revenue_and_events(sink: Sink) -> None:
    partition, (visitor,) = visitors_in_one_partition(1)
    later = [DAY + n * MINUTE for n in range(1, 7)]
    await sink.apply(
        partition,
        [
            (0, assignment(visitor, "x1", "1", DAY, PUBLISHED, visit="s0")),
            (0, conversion(visitor, later[0], PUBLISHED + 1, 100.0)),
            (1, conversion(visitor, later[1], PUBLISHED + 2, 50.0)),  # 150, counted 120
            (2, conversion(visitor, later[2], PUBLISHED + 3, 30.0)),  # 180, still 120
            (3, conversion(visitor, later[3], PUBLISHED + 4, None, goal="view")),
            (4, conversion(visitor, later[4], PUBLISHED + 5, None, goal="view")),
            (5, conversion(visitor, later[5], PUBLISHED + 6, None, goal="view")),  # 3, counted 2
            (1, assignment(visitor, "x1", "1", DAY + 2 * MINUTE, PUBLISHED + 7, visit="s1")),
        ],
    )
    rows = (await sink.totals())["x1"]
    # V = 2 (the second visit came after the cap was reached), O = 3
    assert pick(
        rows["buy"]["1"],
        "conversions", "goal_events", "orders", "revenue", "revenue_sum_squares",
        "visits_revenue_product", "revenue_orders_product",
    ) == {
        "conversions": 1, "goal_events": 3, "orders": 3, "revenue": 120.0,
        "revenue_sum_squares": 14400.0, "visits_revenue_product": 240.0,
        "revenue_orders_product": 360.0,
    }  # fmt: skip
    assert pick(
        rows["view"]["1"],
        "conversions", "goal_events", "goal_events_sum_squares", "visits_goal_events_product",
    ) == {
        "conversions": 1, "goal_events": 2, "goal_events_sum_squares": 4,
        "visits_goal_events_product": 4,
    }  # fmt: skip


async def test_the_covariate_is_the_goal_before_entry_within_the_window(sink: Sink) -> None:
    """Conversions read before the assignments (held, then kept by the entry) and after."""
    partition, (visitor,) = visitors_in_one_partition(1)
    entry = DAY + timedelta(hours=30)
    before = [
        conversion(visitor, entry - timedelta(hours=25), PUBLISHED, None, goal="view"),  # out
        conversion(visitor, entry - timedelta(hours=2), PUBLISHED + 1, None, goal="view"),
        conversion(visitor, entry - timedelta(hours=24), PUBLISHED + 2, 30.0),  # on the edge
        conversion(visitor, entry - 30 * MINUTE, PUBLISHED + 3, 200.0),  # 230, capped 120
        conversion(visitor, entry - 10 * MINUTE, PUBLISHED + 4, None, goal="signup"),
    ]
    await sink.apply(partition, list(enumerate(before)))
    await sink.apply(
        partition,
        [
            (0, assignment(visitor, "x1", "0", entry, PUBLISHED + 10)),
            (1, assignment(visitor, "x2", "0", entry, PUBLISHED + 11)),
        ],
    )
    after = [
        conversion(visitor, entry + MINUTE, PUBLISHED + 20, None, goal="view"),
        conversion(visitor, entry + 2 * MINUTE, PUBLISHED + 21, None, goal="view"),
        conversion(visitor, entry + 3 * MINUTE, PUBLISHED + 22, 10.0),
    ]
    await sink.apply(partition, list(enumerate(after, start=len(before))))
    assert await sink.dead_letters() == {}
    rows = (await sink.totals())["x1"]
    names = ("covariate_sum", "covariate_sum_squares", "covariate_product_sum")
    # view: X = 1 (the event 25 h before is outside the day), Y = 2
    assert pick(rows["view"]["0"], *names) == dict(zip(names, (1, 1, 2), strict=True))
    # buy: X = min(30 + 200, 120) = 120, Y = 10
    assert pick(rows["buy"]["0"], *names) == dict(zip(names, (120, 14400, 1200), strict=True))
    # signup: converted before entry, not after: X = 1, Y = 0
    assert pick(rows["signup"]["0"], *names) == dict(zip(names, (1, 1, 0), strict=True))
    # x2 has CUPED off
    cuped_off = (await sink.totals())["x2"]
    assert all(cuped_off[goal]["0"][name] == 0 for goal in cuped_off for name in names)

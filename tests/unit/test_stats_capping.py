"""The percentile a cap is fixed at: an observed value, the nearest at or above."""

from __future__ import annotations

import pytest

from worker.stats.capping import percentile_cap


def test_the_cap_is_an_observed_value_at_or_above_the_percentile() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    # rank (n - 1) * 0.99 = 98.01 -> the next observed value, index 99
    assert percentile_cap(values, 99.0) == 100.0
    assert percentile_cap(values, 50.0) == 51.0
    assert percentile_cap([5.0, 1.0, 3.0], 60.0) == 5.0


def test_no_values_no_cap_and_a_bad_percentile_is_refused() -> None:
    assert percentile_cap([], 99.0) is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile_cap([1.0], 100.0)

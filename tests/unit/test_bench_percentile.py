"""The bench's nearest-rank percentile: the smallest value with at least q% of the values at or
below it."""

from __future__ import annotations

import math

from bench.load import percentile


def test_p99_of_a_hundred_values_is_the_99th_not_the_largest() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 50) == 50.0


def test_the_median_of_ten_is_the_fifth_and_of_one_is_itself() -> None:
    assert percentile([float(n) for n in range(10, 0, -1)], 50) == 5.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_a_rank_between_two_values_takes_the_higher() -> None:
    values = [float(n) for n in range(1, 641)]
    assert percentile(values, 99) == 634.0  # 633.6 rounded up
    assert percentile(values, 95) == 608.0

"""The Wilson score interval, against values computed by hand and published tables."""

from __future__ import annotations

import pytest

from detllm.diff._interval import wilson_interval


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 40, 0.0, 0.0876),  # z^2 / (n + z^2): "0 of 40" still allows up to ~9%
        (5, 10, 0.2366, 0.7634),  # the textbook example, symmetric about 1/2
        (1, 1, 0.2065, 1.0),  # 1 / (1 + z^2) below
        (8, 32, 0.1325, 0.4211),
        (40, 40, 0.9124, 1.0),
    ],
)
def test_known_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_the_interval_contains_the_rate_and_narrows_with_more_trials() -> None:
    for n in (10, 100, 1000):
        low, high = wilson_interval(n // 10, n)
        assert low < 0.1 < high
    assert wilson_interval(100, 1000)[1] - wilson_interval(100, 1000)[0] < wilson_interval(10, 100)[1] - wilson_interval(10, 100)[0]


@pytest.mark.parametrize(("k", "n"), [(0, 0), (-1, 5), (6, 5)])
def test_refuses_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n)

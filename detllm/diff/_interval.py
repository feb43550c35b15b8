"""Confidence intervals for rates counted over repeated runs."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054
"""The two-sided 95% quantile of the standard normal distribution."""


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / trials``.

    Unlike the normal approximation it stays within [0, 1] and is not empty at 0 or
    ``trials`` successes: 0 of 40 gives (0, 0.088), so "none seen" reads as "below
    about 9%", not as "never".
    """
    if trials < 1:
        raise ValueError(f"a rate needs at least one trial, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and {trials}, got {successes}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    low, high = centre - half, centre + half
    # Exact at the ends, where rounding would leave 1e-17 instead of 0.
    return (0.0 if successes == 0 else max(0.0, low), 1.0 if successes == trials else min(1.0, high))

"""The replay estimators against the true divergences of random distributions."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from detllm.diff._replay import topk_divergence


@st.composite
def two_distributions(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(min_value=2, max_value=12))
    weights = st.lists(st.floats(min_value=1e-4, max_value=1.0), min_size=n, max_size=n)
    p, q = draw(weights), draw(weights)
    p = [w / sum(p) for w in p]
    q = [w / sum(q) for w in q]
    k = draw(st.integers(min_value=0, max_value=n))
    token = draw(st.integers(min_value=0, max_value=n - 1))
    return p, q, k, token


def _top(dist: list[float], k: int) -> list[tuple[int, float]]:
    return sorted(((t, math.log(v)) for t, v in enumerate(dist)), key=lambda e: (-e[1], e[0]))[:k]


@settings(max_examples=300, deadline=None)
@given(two_distributions())
def test_kl_is_a_lower_bound_and_tv_lies_within_its_bounds(case) -> None:  # type: ignore[no-untyped-def]
    p, q, k, token = case
    true_kl = sum(a * math.log(a / b) for a, b in zip(p, q))
    true_tv = sum(abs(a - b) for a, b in zip(p, q)) / 2
    d = topk_divergence(token, math.log(p[token]), math.log(q[token]), _top(p, k), _top(q, k))
    assert 0 <= d.kl <= true_kl + 1e-9
    assert d.tv_low - 1e-9 <= true_tv <= d.tv_high + 1e-9
    assert 0 <= d.missing_mass <= 1 - p[token] + 1e-9
    if k == len(p):  # every token known: the estimate is the divergence itself
        assert math.isclose(d.kl, true_kl, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(d.tv_low, true_tv, abs_tol=1e-9) and math.isclose(d.tv_high, true_tv, abs_tol=1e-9)

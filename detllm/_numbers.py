"""How numbers are written in the sentences of a report."""

from __future__ import annotations


def num(value: float | None) -> str:
    """A logprob-sized number, short: ``-0.6931``, ``3.1e-06``, ``0``."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e4:
        return f"{value:.4g}"
    return f"{value:.2g}" if magnitude < 1e-3 else f"{value:.3g}"


def ratio(value: float, unit: float) -> str:
    """How many times ``unit`` fits in ``value``, for "12x the noise"."""
    if unit <= 0:
        return "inf"
    times = value / unit
    return f"{times:.3g}"


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``1 prompt``, ``2 prompts``."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def percent(value: float) -> str:
    """A rate as a percentage: ``25.0%``."""
    return f"{100 * value:.1f}%"

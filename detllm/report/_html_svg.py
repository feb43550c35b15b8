"""The inline SVG charts of the HTML report: drift at a divergence, divergence positions.

Every number drawn comes from the report model; these functions only place it. Text
that reaches an SVG goes through the page's escaping function first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..diff.model import PositionCount, PromptResult
from .._numbers import num

Escape = Callable[[str], str]

WIDTH = 640
HEIGHT = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 150, 16, 34
_FLOOR = 1e-9
"""The smallest magnitude the logarithmic axis shows; smaller values (0 included) sit on it."""


def _y(value: float, low: float, high: float) -> float:
    v = min(max(abs(value), low), high)
    span = math.log10(high) - math.log10(low)
    return _TOP + (HEIGHT - _TOP - _BOTTOM) * (1 - (math.log10(v) - math.log10(low)) / span)


def _x(index: float, last: float) -> float:
    return _LEFT + (WIDTH - _LEFT - _RIGHT - 24) * (index / last if last > 0 else 0.5)


def drift_chart(result: PromptResult, esc: Escape) -> str:
    """|Δ logprob| against token position up to the first divergence, on a log scale.

    The report records the drift as its first index, its largest value (and where) and
    its RMS over the tokens before the divergence, so the chart draws those: zero up to
    the first differing token, the RMS level from there to the divergence, and the
    maximum as a point. At the divergence it draws both sides' top-1 minus top-2
    margins, the gap between the two sides' preferences and the tolerance it was held
    against.
    """
    d = result.divergence
    assert d is not None
    drift, evidence = result.drift, result.evidence
    last = max(d.index, 1)
    values = [v for v in (
        drift.max_abs if drift else None, drift.rms if drift else None,
        d.left.margin, d.right.margin,
        evidence.gap if evidence else None, evidence.tolerance if evidence else None,
        evidence.noise if evidence else None,
    ) if v is not None and v > 0]  # fmt: skip
    high = 10 ** math.ceil(math.log10(max(values + [1.0])))
    low = min(_FLOOR, 10 ** math.floor(math.log10(min(values)))) if values else _FLOOR
    parts = [
        f'<svg class="chart drift" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img">',
        f"<title>{esc(f'|Δ logprob| before token {d.index}, and the margins at it')}</title>",
    ]
    # Axes: decades on the left, positions below.
    exponent = math.floor(math.log10(low))
    while 10**exponent <= high * 1.0001:
        y = _y(10**exponent, low, high)
        parts.append(f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">1e{exponent}</text>')
        exponent += 3 if high / low > 1e9 else 1
    base = HEIGHT - _BOTTOM
    parts.append(f'<line class="axis" x1="{_LEFT}" y1="{base}" x2="{WIDTH - _RIGHT}" y2="{base}"/>')
    for index in sorted({0, d.index} | ({drift.first_index} if drift and drift.first_index is not None else set())):
        x = _x(index, last)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{base + 16}" text-anchor="middle">{index}</text>')
    parts.append(f'<text class="label" x="{(_LEFT + WIDTH - _RIGHT) / 2:.0f}" y="{HEIGHT - 2}" '
                 'text-anchor="middle">token position</text>')
    # The drift over the common prefix.
    if drift is not None and drift.compared > 0:
        floor_y = _y(low, low, high)
        if drift.first_index is None:
            parts.append(f'<polyline class="delta" points="{_x(0, last):.1f},{floor_y:.1f} '
                         f'{_x(d.index, last):.1f},{floor_y:.1f}"><title>no drift: bit for bit equal</title></polyline>')
        else:
            xf, y_rms = _x(drift.first_index, last), _y(drift.rms, low, high)
            points = f"{_x(0, last):.1f},{floor_y:.1f} {xf:.1f},{floor_y:.1f} {xf:.1f},{y_rms:.1f} {_x(d.index, last):.1f},{y_rms:.1f}"
            parts.append(f'<polyline class="delta" points="{points}"><title>{esc(f"RMS |Δ logprob| {num(drift.rms)} from token {drift.first_index}")}</title></polyline>')
            if drift.max_index is not None:
                parts.append(
                    f'<circle class="delta" cx="{_x(drift.max_index, last):.1f}" cy="{_y(drift.max_abs, low, high):.1f}" r="4">'
                    f"<title>{esc(f'max |Δ logprob| {num(drift.max_abs)} at token {drift.max_index}')}</title></circle>"
                )
    # The divergence and what was weighed there.
    xd = _x(d.index, last)
    parts.append(f'<line class="divergence" x1="{xd:.1f}" y1="{_TOP}" x2="{xd:.1f}" y2="{base}"/>')
    legend: list[tuple[str, str]] = [("delta", "|Δ logprob| (RMS, max)")]
    if evidence is not None and evidence.tolerance is not None:
        y = _y(evidence.tolerance, low, high)
        parts.append(f'<line class="tolerance" x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}">'
                     f"<title>{esc(f'tolerance {num(evidence.tolerance)}')}</title></line>")
        legend.append(("tolerance", f"tolerance {num(evidence.tolerance)}"))
    for name, side, dx in (("left", d.left, -6), ("right", d.right, 6)):
        if side.margin is not None:
            y = _y(side.margin, low, high)
            parts.append(f'<circle class="{name}" cx="{xd + dx:.1f}" cy="{y:.1f}" r="5">'
                         f"<title>{esc(f'{name} top1 - top2 margin {num(side.margin)}')}</title></circle>")
            legend.append((name, f"{name} margin {num(side.margin)}"))
    if evidence is not None and evidence.gap is not None:
        y = _y(evidence.gap, low, high)
        parts.append(f'<rect class="gap" x="{xd - 4:.1f}" y="{y - 4:.1f}" width="8" height="8">'
                     f"<title>{esc(f'gap {num(evidence.gap)}')}</title></rect>")
        legend.append(("gap", f"gap {'>= ' if evidence.gap_is_bound else ''}{num(evidence.gap)}"))
    legend.append(("divergence", f"divergence at {d.index}"))
    for i, (name, text) in enumerate(legend):
        y = _TOP + 8 + 18 * i
        parts.append(f'<rect class="key {name}" x="{WIDTH - _RIGHT + 10}" y="{y - 8}" width="10" height="10"/>')
        parts.append(f'<text class="legend" x="{WIDTH - _RIGHT + 26}" y="{y + 1}">{esc(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


MAX_BARS = 60
"""Positions drawn one bar each; beyond this, consecutive positions share a bar."""


def histogram(positions: list[PositionCount], esc: Escape, what: str) -> tuple[str, str | None]:
    """Bars of ``count`` over first-divergence ``index``; a note when positions share bars."""
    if not positions:
        return "", None
    last = max(p.index for p in positions)
    width = max(1, math.ceil((last + 1) / MAX_BARS))
    bins: dict[int, int] = {}
    for p in positions:
        bins[p.index // width] = bins.get(p.index // width, 0) + p.count
    n_bins = last // width + 1
    tallest = max(bins.values())
    height, left, bottom, plot_w = 180, 40, 30, WIDTH - 60
    bar_w = plot_w / n_bins
    parts = [
        f'<svg class="chart histogram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img"><title>{esc(what)} by first divergent token</title>',
        f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{left + plot_w}" y2="{height - bottom}"/>',
        f'<text class="tick" x="{left - 6}" y="{16}" text-anchor="end">{tallest}</text>',
        f'<text class="tick" x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>',
    ]
    for b, n in sorted(bins.items()):
        h = (height - bottom - 12) * n / tallest
        x = left + b * bar_w
        span = f"{b * width}" if width == 1 else f"{b * width}-{b * width + width - 1}"
        parts.append(f'<rect class="bar" x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                     f'height="{h:.1f}"><title>{esc(f"token {span}: {n} {what}")}</title></rect>')
    for index in sorted({0, last}):
        x = left + (index // width + 0.5) * bar_w
        parts.append(f'<text class="tick" x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{index}</text>')
    parts.append(f'<text class="label" x="{left + plot_w / 2:.0f}" y="{height - 2}" text-anchor="middle">first divergent token</text>')
    parts.append("</svg>")
    note = f"Each bar covers {width} consecutive positions ({len(positions)} positions in all)." if width > 1 else None
    return "".join(parts), note

"""``diffs/first_divergence.json``: the first divergence of every diverging prompt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import msgspec

from ..diff.model import REPORT_FORMAT, REPORT_VERSION, Producer, PromptResult, TraceInfo, Version


class FirstDivergence(PromptResult, frozen=True, kw_only=True):
    """A prompt's comparison, with the runs it stands for in an aggregate report.

    In a diff report ``runs``, ``reference_run`` and ``run`` are null. In an aggregate
    report the entry compares run ``run`` (right) with run ``reference_run`` (left,
    the majority), and ``runs`` lists every run that gave the same completion. In a
    check report it compares run ``run`` with run 0 (``reference_run``), and ``runs``
    is ``[run]``.
    """

    runs: list[int] | None = None
    reference_run: int | None = None
    run: int | None = None


class FirstDivergenceDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON form of ``diffs/first_divergence.json`` (``kind: "first_divergence"``).

    ``left`` and ``right`` describe the traces of a diff; ``runs`` those of an
    aggregate or a check; the others are null.
    """

    format: Literal["detllm.report"]
    version: Version
    kind: Literal["first_divergence"]
    producer: Producer
    left: TraceInfo | None
    right: TraceInfo | None
    runs: list[TraceInfo] | None
    divergences: list[FirstDivergence]


def _entry(result: PromptResult, **runs: Any) -> FirstDivergence:
    fields = {name: getattr(result, name) for name in result.__struct_fields__}
    return FirstDivergence(**fields, **runs)


def first_divergences(report: Any) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The document's head (everything but ``divergences``) and its entries, of a diff, an
    aggregate or a check report."""
    if report.kind == "diff":
        head = FirstDivergenceDocument(
            format=REPORT_FORMAT, version=REPORT_VERSION, kind="first_divergence", producer=report.producer,
            left=report.left, right=report.right, runs=None, divergences=[],
        )
        results: Iterator[FirstDivergence] = (
            _entry(p) for p in report.prompts if p.status not in ("identical", "left_only", "right_only")
        )
    elif report.kind == "check":
        head = FirstDivergenceDocument(
            format=REPORT_FORMAT, version=REPORT_VERSION, kind="first_divergence", producer=report.producer,
            left=None, right=None, runs=[r.trace for r in report.runs], divergences=[],
        )
        results = (
            _entry(d.result, runs=[report.comparisons[d.comparison].right], reference_run=report.comparisons[d.comparison].left,
                   run=report.comparisons[d.comparison].right)
            for p in report.prompts
            for d in p.divergences
            if d.result.status != "identical"
        )
    else:
        head = FirstDivergenceDocument(
            format=REPORT_FORMAT, version=REPORT_VERSION, kind="first_divergence", producer=report.producer,
            left=None, right=None, runs=report.runs, divergences=[],
        )
        results = (
            _entry(v.comparison, runs=v.runs, reference_run=v.reference_run, run=v.run)
            for p in report.prompts
            for v in p.variants
            if v.comparison is not None
        )
    data = msgspec.to_builtins(head)
    data.pop("divergences")
    return data, (msgspec.to_builtins(r) for r in results)

"""Text and Markdown for aggregate reports."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator

from ..diff.model import AggregateReport, FieldVariation, PositionCount, PromptAggregate
from .._numbers import count
from .._escape import code
from .._escape import markdown as cell
from .._escape import text as escape
from ._markdown import divergence_md
from ._text import DEFAULT_MAX_PROMPTS, WIDTH, divergence_lines, paragraph, tier_word, value_raw
from .._text_util import clip, pad, raw_tokens_text

MAX_RUNS_LISTED = 20


def run_ranges(runs: list[int]) -> str:
    """``[0, 1, 2, 3, 6, 8]`` -> ``0-3, 6, 8``."""
    parts: list[str] = []
    start = previous = None
    for run in sorted(runs):
        if start is None:
            start = previous = run
        elif run == previous + 1:  # type: ignore[operator]
            previous = run
        else:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = previous = run
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ", ".join(parts)


def _variation(v: FieldVariation) -> str:
    if len(v.values) > 4:
        return f"{len(v.values)} values"
    return "; ".join(f"{value_raw(x.value, False)} (runs {run_ranges(x.runs)})" for x in v.values)


def histogram(positions: list[PositionCount], bars: int = 20) -> list[tuple[str, int]]:
    """Positions as at most ``bars`` labelled buckets."""
    if not positions:
        return []
    low, high = positions[0].index, positions[-1].index
    size = max(1, math.ceil((high - low + 1) / bars))
    buckets: dict[int, int] = {}
    for p in positions:
        start = low + (p.index - low) // size * size
        buckets[start] = buckets.get(start, 0) + p.count
    label = (lambda s: str(s)) if size == 1 else (lambda s: f"{s}-{s + size - 1}")
    return [(label(start), n) for start, n in sorted(buckets.items())]


def _split_or_missing(report: AggregateReport) -> Iterator[tuple[int, PromptAggregate]]:
    """Each prompt whose completions split or that some run lacks, with its index.

    The engine's sequence of prompts can list these without rebuilding the prompts that
    are the same in every run (``unlike``); a loaded report's list is read through.
    """
    unlike = getattr(report.prompts, "unlike", None)
    pairs = unlike() if unlike is not None else enumerate(report.prompts)
    return ((i, p) for i, p in pairs if p.completions > 1 or p.missing)


def _ids(report: AggregateReport) -> Iterator[tuple[int, str]]:
    ids = getattr(report.prompts, "ids", None)
    return ids() if ids is not None else ((i, p.prompt_id) for i, p in enumerate(report.prompts))


def _table(report: AggregateReport, limit: int) -> tuple[list[PromptAggregate], int]:
    """The prompts for the text table: those that split or miss runs first, by id, then
    the others by id, at most ``limit``, in report order; and how many split in all.

    One pass, holding ``limit`` prompts at most, whatever the number of prompts.
    """
    total = 0

    def counted() -> Iterator[tuple[str, int]]:
        nonlocal total
        for i, p in _split_or_missing(report):
            total += 1
            yield p.prompt_id, i

    chosen = heapq.nsmallest(limit, counted())
    if len(chosen) < limit:  # then every prompt that splits is chosen, and few are
        taken = {i for _, i in chosen}
        chosen += heapq.nsmallest(limit - len(chosen), ((pid, i) for i, pid in _ids(report) if i not in taken))
    return [report.prompts[i] for i in sorted(i for _, i in chosen)], total


def render_aggregate_text(report: AggregateReport, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    return "\n".join(_text(report, max_prompts)) + "\n"


def _text(report: AggregateReport, max_prompts: int) -> Iterator[str]:
    v, s = report.verdict, report.summary
    yield f"detllm report: {escape(v.classification)} across {count(s.runs, 'run')} of {count(s.prompts, 'prompt')}"
    yield (
        f"Tier 1: {tier_word(v.tier1)}   Tier 2: {tier_word(v.tier2)}   "
        f"exit status {report.exit_code()} (judged at Tier {report.options.tier})"
    )
    yield ""
    yield from paragraph(v.text, "")
    for note in report.notes:
        yield from paragraph("Note: " + note, "")
    yield ""
    yield f"Runs ({len(report.runs)})"
    for i, run in enumerate(report.runs[:MAX_RUNS_LISTED]):
        incomplete = " INCOMPLETE" if not run.complete else ""
        yield f"  {i:>3}  {pad(clip(escape(run.path), 44, left=True), 44)} batch {run.batch_size:<4} {count(run.rows, 'row')}{incomplete}"
    if len(report.runs) > MAX_RUNS_LISTED:
        yield f"  ... and {len(report.runs) - MAX_RUNS_LISTED} more (all are in the JSON report)"
    yield ""
    yield "Setup: fields that vary across runs" + ("" if report.setup.varying else ": none")
    for variation in report.setup.varying:
        field = clip(escape(variation.field), WIDTH - 4)
        if len(field) > 24:
            yield f"  {field}"
            field = ""
        yield f"  {pad(field, 24)} {pad(clip(escape(_variation(variation)), 40), 40)} {escape(variation.category)}"
    yield from paragraph(f"Attribution: {report.setup.attribution.cause}. {report.setup.attribution.text}")
    yield ""
    shown, split_count = _table(report, max_prompts * 2)
    yield f"  {pad('prompt', 24)} {'completions':>11} {'majority':>9} {'logprobs':>9}  classification"
    for p in shown:
        groups = "n/a" if p.logprob_groups is None else str(p.logprob_groups)
        yield (
            f"  {pad(clip(escape(p.prompt_id), 24), 24)} {p.completions:>11} {f'{p.majority_runs}/{s.runs}':>9} "
            f"{groups:>9}  {escape(p.classification)}"
        )
    if len(report.prompts) > len(shown):
        yield _more_prompts(report, shown, split_count)
    yield "  (completions: distinct token sequences; majority: runs giving the most common"
    yield "  one; logprobs: distinct logprob vectors among those runs)"
    if split_count:
        yield ""
        yield "Where completions split"
        for _, p in itertools.islice(_split_or_missing(report), max_prompts):
            if p.split is not None:
                context = raw_tokens_text(p.split.context)
                if p.split.index > len(p.split.context):
                    context = "..." + context
                lead = f' ("{clip(context, 30, left=True)}")' if context else ""
                yield from paragraph(f"{p.prompt_id}: {p.split.text}{lead}", "  ")
                for variant in p.variants[1:]:
                    c = variant.comparison
                    where = f" at token {variant.first_divergence}" if variant.first_divergence is not None else ""
                    yield f"    runs {run_ranges(variant.runs)}: {escape(c.classification) if c else '?'}{where}"
            if p.missing:
                yield f"  {escape(p.prompt_id)}: missing from runs {run_ranges(p.missing)}"
        if split_count > max_prompts:
            yield f"  ... and {split_count - max_prompts} more prompts"
    buckets = histogram(s.divergence_positions)
    if buckets:
        yield ""
        yield "Divergence positions (runs leaving the majority, by first divergent token)"
        most = max(n for _, n in buckets)
        for label, n in buckets:
            bar = "#" * max(1, round(n / most * 40))
            yield f"  {label:>9}  {bar} {n}"
    shown_divergences = hidden = 0
    for _, p in _split_or_missing(report):
        for variant in p.variants[1:]:
            c = variant.comparison
            if c is None or c.divergence is None:
                continue
            if shown_divergences >= max_prompts:
                hidden += 1
                continue
            shown_divergences += 1
            yield ""
            k = min(report.runs[variant.reference_run].top_k, report.runs[variant.run].top_k)
            title = (
                f'Prompt "{p.prompt_id}", runs {run_ranges(variant.runs)} against the majority '
                f"(left: run {variant.reference_run}, right: run {variant.run}): {c.classification} at token "
                f"{c.divergence.index}"
            )
            yield from paragraph(title, "")
            yield from divergence_lines(c, report.options.near_tie_factor, k)
    if hidden:
        yield ""
        yield f"... and {count(hidden, 'more divergence')} against the majority (all are in the JSON report)"


def _more_prompts(report: AggregateReport, shown: list[PromptAggregate], split_count: int) -> str:
    """The line under a cut prompt table: how many are left out, and whether any of them split."""
    left_out = len(report.prompts) - len(shown)
    split = split_count - sum(p.completions > 1 or bool(p.missing) for p in shown)
    if not split:
        return f"  ... and {count(left_out, 'more prompt')}, each with one completion"
    return (
        f"  ... and {count(left_out, 'more prompt')}, {split} of them with completions that split or "
        "missing from a run (all are in the JSON report)"
    )


def render_aggregate_markdown(report: AggregateReport, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    return "\n".join(_markdown(report, max_prompts)).rstrip("\n") + "\n"


def _markdown(report: AggregateReport, max_prompts: int) -> Iterator[str]:
    v, s = report.verdict, report.summary
    yield f"### detLLM report: {code(v.classification)} across {count(s.runs, 'run')} of {count(s.prompts, 'prompt')}"
    yield ""
    yield f"**Tier 1: {tier_word(v.tier1)} · Tier 2: {tier_word(v.tier2)}** (judged at Tier {report.options.tier})"
    yield ""
    yield cell(v.text)
    yield ""
    for note in report.notes:
        yield f"Note: {cell(note)}"
        yield ""
    a = report.setup.attribution
    yield f"**Setup.** Attribution: {code(a.cause)}. {cell(a.text)}"
    yield ""
    if report.setup.varying:
        yield "| field | values (runs) | kind |"
        yield "|---|---|---|"
        for variation in report.setup.varying:
            yield f"| {code(variation.field)} | {cell(_variation(variation))} | {cell(variation.category)} |"
        yield ""
    yield "| prompt | completions | majority | logprob vectors | classification | split |"
    yield "|---|---:|---:|---:|---|---|"
    shown = [p for _, p in itertools.islice(_split_or_missing(report), max_prompts * 2)]
    stable = len(report.prompts) - sum(1 for _ in _split_or_missing(report))
    for p in shown:
        groups = "n/a" if p.logprob_groups is None else str(p.logprob_groups)
        split = cell(p.split.text) if p.split is not None else ""
        yield f"| {code(p.prompt_id)} | {p.completions} | {p.majority_runs}/{s.runs} | {groups} | {code(p.classification)} | {split} |"
    split_hidden = len(report.prompts) - stable - len(shown)
    if split_hidden:
        yield f"| {count(split_hidden, 'more prompt')} whose completions split (all are in the JSON report) | | | | | |"
    if stable:
        yield f"| {count(stable, 'other prompt')} | 1 | {s.runs}/{s.runs} | | | |"
    yield ""
    buckets = histogram(s.divergence_positions)
    if buckets:
        yield "| first divergent token | runs |"
        yield "|---:|---:|"
        for label, n in buckets:
            yield f"| {label} | {n} |"
        yield ""
    shown_divergences = hidden = 0
    for _, p in _split_or_missing(report):
        for variant in p.variants[1:]:
            c = variant.comparison
            if c is None or c.divergence is None:
                continue
            if shown_divergences >= max_prompts:
                hidden += 1
                continue
            shown_divergences += 1
            k = min(report.runs[variant.reference_run].top_k, report.runs[variant.run].top_k)
            title = (
                f"#### {code(p.prompt_id)}, runs {run_ranges(variant.runs)} against the majority "
                f"(left: run {variant.reference_run}, right: run {variant.run}): {code(c.classification)} at token "
                f"{c.divergence.index}"
            )
            yield from divergence_md(c, report.options.near_tie_factor, k, title=title)
    if hidden:
        yield f"... and {count(hidden, 'more divergence')} against the majority (all are in the JSON report)."
        yield ""
    yield "<details><summary>Runs</summary>"
    yield ""
    yield "| run | trace | batch | rows |"
    yield "|---:|---|---:|---:|"
    for i, run in enumerate(report.runs[:MAX_RUNS_LISTED]):
        yield f"| {i} | {code(run.path)} | {run.batch_size} | {run.rows}{'' if run.complete else ' (incomplete)'} |"
    if len(report.runs) > MAX_RUNS_LISTED:
        yield f"| ... | {len(report.runs) - MAX_RUNS_LISTED} more | | |"
    yield ""
    yield "</details>"

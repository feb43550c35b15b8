"""Judging a sweep offline: every variant trace against the baseline, by the diff engine."""

from __future__ import annotations

import os
from pathlib import Path

from ._engine import diff_traces
from ._model import CLASSIFICATIONS, TIER1_FAILURES
from ._options import DiffOptions
from .._numbers import count
from ..reader import open_trace
from ..rundir import read_document
from ..trace import at_least
from ._sweep_model import (
    SWEEP_FILE,
    SWEEP_FORMAT,
    PrefixCounters,
    PrefixProbe,
    SweepComparison,
    SweepRecord,
    SweepReport,
    SweepVariant,
    SweepVariantRecord,
    SweepVerdict,
    judge,
    variants_answer,
)


def read_sweep(directory: str | os.PathLike[str]) -> SweepRecord | None:
    """A check directory's ``sweep.json``; None when the check swept nothing. A file that
    does not follow its format (``formats/run-directory.md``) is one located error."""
    return read_document(Path(directory) / SWEEP_FILE, SWEEP_FORMAT, SweepRecord)


def compare_with(baseline: Path, path: Path, options: DiffOptions, name: str, role: str) -> SweepComparison:
    """One trace against the baseline: counts, the diverging prompts, the classification."""
    report = diff_traces(baseline, path, options.replace(tier=1))
    results = list(report.prompts)
    logprobs = report.verdict.tier2 is not None or not report.verdict.tier1
    return SweepComparison(
        trace=name,
        role=role,  # type: ignore[arg-type]
        prompts=len(results),
        tokens_stable=sum(r.status not in TIER1_FAILURES for r in results),
        logprobs_stable=sum(r.status == "identical" for r in results) if logprobs else None,
        divergent=[r.prompt_id for r in results if r.status in TIER1_FAILURES],
        classification=report.classification,
        scheduled_steps=scheduled_steps(path),
    )


def scheduled_steps(path: Path) -> int | None:
    """The most engine steps over which one batch of the trace at ``path`` was first
    scheduled, from its rows' ``batch.step`` (trace 1.2); None when no batch was spread."""
    with open_trace(path) as reader:
        if not at_least(reader.header, 2):
            return None  # before 1.2 no row says so
        spread: dict[int, int] = {}
        for row in reader:
            batch = row.batch
            if batch is not None and batch.step is not None:
                spread[batch.index] = max(spread.get(batch.index, 1), batch.step + 1)
    return max(spread.values(), default=None)


def _probe(counters: PrefixCounters) -> PrefixProbe:
    prompts = sorted(set(counters.cold) | set(counters.warm))
    missed = [p for p in prompts if not counters.warm.get(p)]
    warm_hits = len(prompts) - len(missed)
    cold_hits = sum(bool(counters.cold.get(p)) for p in prompts)
    n = len(prompts)
    if not missed:
        text = f"the warm pass hit the prefix cache for {warm_hits} of {count(n, 'prompt')} (vLLM's num_cached_tokens)"
    else:
        text = (
            f"the warm pass did not hit the prefix cache for {len(missed)} of {count(n, 'prompt')} "
            f"(vLLM's num_cached_tokens is 0 or missing): for those, warm and cold ran the same way, "
            f"and the probe tested nothing"
        )
        if counters.block_size:
            text += (
                f" (vLLM caches whole blocks of {counters.block_size} tokens: a prompt needs more than "
                f"{counters.block_size} tokens to be served from the cache; see the backend option block_size)"
            )
    if cold_hits:
        text += f"; the cold pass already hit it for {cold_hits} (prompts sharing a prefix with earlier ones)"
    return PrefixProbe(prompts=n, warm_hits=warm_hits, cold_hits=cold_hits, missed=missed, text=text + ".")


def _variant(base: Path, baseline: Path, record: SweepVariantRecord, options: DiffOptions) -> SweepVariant:
    comparisons = []
    if record.status == "run":
        comparisons = [compare_with(baseline, base / t.path, options, t.name, t.role) for t in record.traces]
    probe = _probe(record.prefix_cache) if record.prefix_cache is not None else None
    classification = None
    stable: bool | None = None
    if comparisons:
        found = {c.classification for c in comparisons}
        classification = next((c for c in CLASSIFICATIONS if c in found), "identical")
        stable = judge(comparisons, probe, options.tier)
    return SweepVariant(
        name=record.name,
        settings=record.settings,
        changes=record.changes,
        status=record.status,
        reason=record.reason,
        applied=record.applied,
        fresh_process=record.fresh_process,
        comparisons=comparisons,
        prefix_cache=probe,
        classification=classification,
        stable=stable,
    )


def build_sweep_report(directory: str | os.PathLike[str], options: DiffOptions) -> SweepReport | None:
    """The sweep of a check directory judged at ``options``; None when it has no sweep."""
    base = Path(directory)
    record = read_sweep(base)
    if record is None:
        return None
    baseline = base / record.baseline
    variants = [_variant(base, baseline, v, options) for v in record.variants]
    return SweepReport(mode=record.mode, baseline=record.baseline, variants=variants, verdict=_verdict(variants, options))


def _verdict(variants: list[SweepVariant], options: DiffOptions) -> SweepVerdict:
    judged = [v for v in variants if v.status != "baseline"]
    changed = [v.name for v in judged if v.stable is False]
    unknown = [v for v in judged if v.stable is None]
    what = "tokens" if options.tier == 1 else "tokens or logprobs"
    parts = []
    if changed:
        parts.append(f"{len(changed)} of {count(len(judged), 'variant')} changed the {what} against the baseline: {', '.join(changed)}.")
    elif judged:
        parts.append(f"No variant that ran changed the {what} against the baseline.")
    for v in unknown:
        if v.status in ("not_run", "not_applied"):
            word = "not run" if v.status == "not_run" else "not applied"
            parts.append(f"{v.name}: {word} ({v.reason}).")
        elif v.prefix_cache is not None and v.prefix_cache.missed:
            parts.append(f"{v.name}: {v.prefix_cache.text}")
        else:
            parts.append(f"{v.name}: cannot be judged at Tier {options.tier} (no logprobs).")
    return SweepVerdict(stable=variants_answer(variants, options.tier), changed=changed, text=" ".join(parts))

"""Engine-setting sweeps: what was run (``sweep.json``) and what it showed (the report).

``sweep.json`` holds the capture facts a sweep alone knows: which settings each variant
asked for, what the engine reported it applied, why a variant was not run, and the
prefix-cache counters of the cold and warm probe. The report part is built from it and
the traces by the diff engine (``_sweep.py``), so a check directory can be judged again.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "detllm.sweep"
SWEEP_VERSION = "1.0"

SweepMode = Literal["one-at-a-time", "grid"]
SWEEP_MODES: tuple[str, ...] = get_args(SweepMode)

VariantStatus = Literal["run", "baseline", "not_run", "not_applied"]
"""``run``: recorded and compared with the baseline; ``baseline``: the values are the
baseline's own, nothing to rerun; ``not_run``: the platform does not support the
setting, or the engine refused to start with it (``reason`` says which);
``not_applied``: the engine ran but reports other values than those asked for."""

TraceRole = Literal["run", "cold", "warm"]
"""``run``: one pass over the prompts; ``cold`` and ``warm``: the prefix-cache probe's
first pass (cache emptied before it) and second pass (cache kept from the first)."""


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class SweepTrace(_Struct):
    name: str
    path: str
    """Relative to the check directory."""
    role: TraceRole


class PrefixCounters(_Struct):
    """vLLM's own count of prompt tokens served from its prefix cache, per prompt
    (``RequestOutput.num_cached_tokens``; null where the engine gave none)."""

    cold: dict[str, int | None]
    warm: dict[str, int | None]
    block_size: int | None = None
    """The engine's KV-cache block size: vLLM caches whole blocks, so prompts shorter than one never hit."""



class SweepVariantRecord(_Struct, kw_only=True):
    """One variant of the baseline, as run."""

    name: str
    """``key=value`` (joined by ``, `` in a grid)."""
    settings: dict[str, Any]
    """Swept setting -> the value asked for."""
    changes: dict[str, Any]
    """What changed in the run settings: ``dtype``, ``threads`` and ``options`` (with
    any option set together with a value, such as ``max_num_batched_tokens``)."""
    status: VariantStatus
    reason: str | None = None
    applied: dict[str, Any] = {}
    """Setting (the swept ones and their companions) -> the value read back from the engine."""
    fresh_process: bool = True
    traces: list[SweepTrace] = []
    prefix_cache: PrefixCounters | None = None


class SweepRecord(_Struct, kw_only=True):
    """The content of ``sweep.json``."""

    format: Literal["detllm.sweep"] = SWEEP_FORMAT
    version: str = SWEEP_VERSION
    mode: SweepMode
    baseline: str
    """The baseline trace (run 0 of the check), relative to the check directory."""
    variants: list[SweepVariantRecord]


class SweepComparison(_Struct):
    """One trace of a variant compared with the baseline by the diff engine."""

    trace: str
    role: TraceRole
    prompts: int
    tokens_stable: int
    """Prompts whose tokens equal the baseline's."""
    logprobs_stable: int | None
    """Prompts whose tokens and logprobs (within ``atol``) equal the baseline's; null without logprobs."""
    divergent: list[str]
    """Ids of the prompts whose tokens differ from the baseline's."""
    classification: str
    scheduled_steps: int | None = None
    """The most engine steps over which one batch of the trace was first scheduled (its
    rows' ``batch.step``, trace 1.2): the engine started that batch's prompts in turn,
    not together. Null when every batch started in one step."""


class PrefixProbe(_Struct):
    """Whether the warm pass of the prefix-cache probe hit the cache, by the engine's counters."""

    prompts: int
    warm_hits: int
    """Prompts with at least one prompt token served from the cache in the warm pass."""
    cold_hits: int
    missed: list[str]
    """Prompts whose warm pass took nothing from the cache (or whose counter is missing)."""
    text: str


class SweepVariant(_Struct):
    name: str
    settings: dict[str, Any]
    changes: dict[str, Any]
    status: VariantStatus
    reason: str | None
    applied: dict[str, Any]
    fresh_process: bool
    comparisons: list[SweepComparison]
    prefix_cache: PrefixProbe | None
    classification: str | None
    """The most serious classification over its comparisons; null when not run."""
    stable: bool | None
    """Every comparison stable at the report's tier; null when not run, not applied, or
    when a prefix-cache probe did not hit the cache (the warm pass then tests nothing)."""


class SweepVerdict(_Struct):
    stable: bool | None
    """Every variant stable; false when one is not; null when none is unstable but one could not be judged."""
    changed: list[str]
    """Names of the variants that changed the output at the report's tier."""
    text: str


class SweepReport(_Struct):
    """The ``sweep`` member of a check report."""

    mode: SweepMode
    baseline: str
    variants: list[SweepVariant]
    verdict: SweepVerdict


def comparison_stable(comparison: SweepComparison, tier: int) -> bool | None:
    """The trace agrees with the baseline at ``tier``; null at Tier 2 without logprobs."""
    if comparison.tokens_stable < comparison.prompts:
        return False
    if tier == 1:
        return True
    if comparison.logprobs_stable is None:
        return None
    return comparison.logprobs_stable == comparison.prompts


def judge(comparisons: list[SweepComparison], probe: PrefixProbe | None, tier: int) -> bool | None:
    """A variant that ran: false when a trace changed, null when one cannot be judged or
    the prefix-cache probe missed the cache (then the warm pass tested nothing)."""
    answers = [comparison_stable(c, tier) for c in comparisons]
    if False in answers:
        return False
    if None in answers or not answers or (probe is not None and probe.missed):
        return None
    return True


def variant_answer(variant: SweepVariant, tier: int) -> bool | None:
    """The variant's answer at ``tier``; null when it was not run or not applied."""
    if variant.status != "run":
        return None
    return judge(variant.comparisons, variant.prefix_cache, tier)


def sweep_answer(sweep: SweepReport, tier: int) -> bool | None:
    return variants_answer(sweep.variants, tier)


def variants_answer(variants: list[SweepVariant], tier: int) -> bool | None:
    """False when a variant changed the output at ``tier``, null when none did but one
    could not be judged, true when every variant kept the baseline's output."""
    answers = [variant_answer(v, tier) for v in variants if v.status != "baseline"]
    if False in answers:
        return False
    return None if None in answers else True

"""The concurrency question of a server check, answered from the aggregate of its traces.

A server check records every prompt ``runs`` times at each concurrency level (that
many requests in flight). The aggregate engine finds each prompt's distinct
completions and their majority over every run of every level, and compares each
minority with the majority (the diff engine's first divergence and classification).
Here that is read per level against each prompt's *reference*: its most common
completion at the lowest level (the requests that found the server least busy). At
each level, the odd ones out are the completions with other tokens than the
reference, counted with a 95% Wilson interval, so that "0 of 40" reads as "below
about 9%", not as "never". The reference is not the majority: when crowded levels
outnumber the sequential one, the majority is the crowded completion, and counting
against it would blame the sequential requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ._interval import wilson_interval
from .._numbers import count, percent
from ._aggregate_model import AggregateReport, Variant


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class LevelRate(_Struct):
    """One concurrency level: completions that left their prompt's majority."""

    concurrency: int
    completions: int
    """Prompts x runs at this level."""
    odd: int
    """Completions whose tokens differ from their prompt's reference (its most common completion at the lowest level)."""
    rate: float
    low: float
    high: float
    """The 95% Wilson interval of ``odd / completions``."""
    prompts_changed: int
    """Prompts with at least one odd completion at this level."""


class Minority(_Struct):
    """One completion of a prompt other than its reference, and where it leaves the one it was compared with."""

    variant: int
    runs: list[str]
    """The traces that gave it."""
    levels: list[int]
    """Their concurrency levels, distinct, ascending."""
    first_divergence: int | None
    classification: str
    compared_with: int = 0
    """The variant the diff engine compared it with: the reference, or else the majority (variant 0)."""


class ConcurrencyPrompt(_Struct):
    """A prompt with more than one completion over the levels."""

    prompt_id: str
    completions: int
    majority_runs: int
    runs: int
    minorities: list[Minority]
    """Every completion but the reference."""
    reference: int = 0
    """The variant that is the reference: the most common completion at the lowest level."""
    reference_runs: int = 0
    """Runs, over every level, that gave the reference."""


class ConcurrencyAnswer(_Struct):
    """Concurrency invariance: every run at every level gives each prompt's majority tokens.

    ``invariant_logprobs``: also the same logprobs as run 0 at every level (null
    without logprobs).
    """

    levels: list[LevelRate]
    prompts: list[ConcurrencyPrompt]
    invariant: bool
    invariant_logprobs: bool | None
    text: str


def concurrency_answer(
    aggregate: AggregateReport, names: Sequence[str], levels: Sequence[int | None], logprobs_hold: bool | None
) -> ConcurrencyAnswer:
    """``names[i]`` and ``levels[i]``: run ``i``'s trace name and concurrency level."""
    odd_at: dict[int, int] = {}
    changed_at: dict[int, set[str]] = {}
    per_level = {level: levels.count(level) for level in levels if level is not None}
    lowest = min(per_level) if per_level else None
    prompts = []
    for item in aggregate.prompts:
        reference = _reference(item.variants, levels, lowest)
        reference_runs = set(reference.runs) if reference is not None else set()
        for run in range(len(names)):
            level = levels[run]
            if level is None or run in item.missing or run in reference_runs:
                continue
            odd_at[level] = odd_at.get(level, 0) + 1
            changed_at.setdefault(level, set()).add(item.prompt_id)
        if item.completions > 1 and reference is not None:
            prompts.append(
                ConcurrencyPrompt(
                    prompt_id=item.prompt_id,
                    completions=item.completions,
                    majority_runs=item.majority_runs,
                    runs=item.runs,
                    minorities=[_minority(v, reference, names, levels) for v in item.variants if v is not reference],
                    reference=reference.index,
                    reference_runs=len(reference.runs),
                )
            )
    n_prompts = len(aggregate.prompts)
    rates = []
    for level in sorted(per_level):
        total = per_level[level] * n_prompts
        odd = odd_at.get(level, 0)
        low, high = wilson_interval(odd, total)
        rates.append(
            LevelRate(concurrency=level, completions=total, odd=odd, rate=odd / total, low=low, high=high,
                      prompts_changed=len(changed_at.get(level, ())))
        )
    invariant = not prompts and not any(item.missing for item in aggregate.prompts)
    invariant_logprobs = None if not invariant or logprobs_hold is None else logprobs_hold
    return ConcurrencyAnswer(
        levels=rates,
        prompts=prompts,
        invariant=invariant,
        invariant_logprobs=invariant_logprobs,
        text=_text(rates, prompts, n_prompts, invariant, invariant_logprobs),
    )


def _reference(variants: Sequence[Variant], levels: Sequence[int | None], lowest: int | None) -> Variant | None:
    """The variant with the most runs at the lowest level; a tie goes to the more common one overall."""
    if not variants:
        return None
    return max(variants, key=lambda v: (sum(1 for r in v.runs if levels[r] == lowest), -v.index))


def _minority(variant: Variant, reference: Variant, names: Sequence[str], levels: Sequence[int | None]) -> Minority:
    # The aggregate compared every variant with the majority (variant 0); when the
    # reference is not the majority, the majority's comparison is the reference's, seen
    # from the other side, and any third variant stays compared with the majority.
    compared = reference if variant.index == 0 else variant
    return Minority(
        variant=variant.index,
        runs=[names[r] for r in variant.runs],
        levels=sorted({lv for r in variant.runs if (lv := levels[r]) is not None}),
        first_divergence=compared.first_divergence,
        classification=compared.comparison.classification if compared.comparison is not None else "inconclusive",
        compared_with=reference.index if variant.index == 0 else 0,
    )


def level_words(rate: LevelRate) -> str:
    """``at 8 in flight: 8 of 32 completions odd one out (25.0%, 95% interval 13.3%-42.1%)``."""
    return (
        f"at {rate.concurrency} in flight: {rate.odd} of {count(rate.completions, 'completion')} odd one out "
        f"({percent(rate.rate)}, 95% interval {percent(rate.low)}-{percent(rate.high)})"
    )


def _text(rates: list[LevelRate], prompts: list[ConcurrencyPrompt], n: int, invariant: bool, logprobs: bool | None) -> str:
    levels = ", ".join(str(r.concurrency) for r in rates)
    if invariant:
        tail = {True: " and the same logprobs", False: ", but not all the same logprobs", None: ""}[logprobs]
        bound = max(rates, key=lambda r: r.high)
        return (
            f"At {levels} requests in flight every completion of the {count(n, 'prompt')} had the same tokens{tail}: "
            f"concurrency invariant in tokens. That bounds the odd-one-out rate, not rules it out: "
            f"{level_words(bound)}."
        )
    classes = sorted({m.classification for p in prompts for m in p.minorities})
    per_level = "; ".join(level_words(r) for r in rates)
    return (
        f"At {levels} requests in flight, {len(prompts)} of {count(n, 'prompt')} gave more than one completion "
        f"({', '.join(classes)}): not concurrency invariant. Against each prompt's completion at {rates[0].concurrency} "
        f"in flight (its most common one there), {per_level}."
    )

"""The concurrency question of a server check, answered from the aggregate of its traces.

A server check records every prompt ``runs`` times at each concurrency level (that
many requests in flight). The aggregate engine finds each prompt's distinct
completions and their majority over every run of every level, and compares each
minority with the majority (the diff engine's first divergence and classification).
Here that is read per level: how many completions at that level are odd ones out
(other tokens than their prompt's majority), with a 95% Wilson interval, so that
"0 of 40" reads as "below about 9%", not as "never".
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..diff._interval import wilson_interval
from ..diff._numbers import count
from ._aggregate_model import AggregateReport


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class LevelRate(_Struct):
    """One concurrency level: completions that left their prompt's majority."""

    concurrency: int
    completions: int
    """Prompts x runs at this level."""
    odd: int
    """Completions whose tokens differ from their prompt's majority (over every level)."""
    rate: float
    low: float
    high: float
    """The 95% Wilson interval of ``odd / completions``."""
    prompts_changed: int
    """Prompts with at least one odd completion at this level."""


class Minority(_Struct):
    """One completion of a prompt other than the majority, and where it leaves it."""

    variant: int
    runs: list[str]
    """The traces that gave it."""
    levels: list[int]
    """Their concurrency levels, distinct, ascending."""
    first_divergence: int | None
    classification: str


class ConcurrencyPrompt(_Struct):
    """A prompt with more than one completion over the levels."""

    prompt_id: str
    completions: int
    majority_runs: int
    runs: int
    minorities: list[Minority]


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
    prompts = []
    for item in aggregate.prompts:
        majority_runs = set(item.variants[0].runs) if item.variants else set()
        for run in range(len(names)):
            level = levels[run]
            if level is None or run in item.missing or run in majority_runs:
                continue
            odd_at[level] = odd_at.get(level, 0) + 1
            changed_at.setdefault(level, set()).add(item.prompt_id)
        if item.completions > 1:
            minorities = [
                Minority(
                    variant=v.index,
                    runs=[names[r] for r in v.runs],
                    levels=sorted({lv for r in v.runs if (lv := levels[r]) is not None}),
                    first_divergence=v.first_divergence,
                    classification=v.comparison.classification if v.comparison is not None else "inconclusive",
                )
                for v in item.variants[1:]
            ]
            prompts.append(
                ConcurrencyPrompt(
                    prompt_id=item.prompt_id,
                    completions=item.completions,
                    majority_runs=item.majority_runs,
                    runs=item.runs,
                    minorities=minorities,
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


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


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
        f"({', '.join(classes)}): not concurrency invariant. Against each prompt's majority, {per_level}."
    )

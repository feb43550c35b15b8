"""Comparing a trace with a replay of it: the same tokens, another setup's numbers.

A replay trace (``Header.replay``, trace format 1.1) holds the source's token ids with
the logprobs, top-k and ranks another setup computes for them. Both sides describe the
same prefixes, so every position compares, not only those before a first divergence.
The estimators are defined in docs/diff.md ("Replay"); this module is their only
implementation. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from ..trace import Header, Row

EPSILON = 1e-12
"""A probability mass at or below this counts as zero (log-sum rounding)."""


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class Flip(_Struct):
    """A position where the recorded token would not be chosen greedily under the replay's setup."""

    index: int
    """0-based position among the generated tokens."""
    token: int
    token_text: str | None
    rank: int | None
    """The recorded token's rank under the replay (null: the replay did not say)."""
    replay_top1: int
    replay_top1_text: str | None
    logprob_original: float | None
    logprob_replay: float
    margin: float
    """``logprob(replay top-1) - logprob(recorded token)``, both under the replay: how far the
    recorded token lies behind the replay's greedy choice."""


class Statistics(_Struct):
    """Figures over a set of positions (one prompt, or all of them)."""

    positions: int
    """Generated positions."""
    compared: int
    """Positions where both sides have a logprob for the recorded token."""
    max_abs_delta: float | None
    mean_abs_delta: float | None
    """Of ``|logprob_replay - logprob_original|`` of the recorded token."""
    kl_mean: float | None
    kl_max: float | None
    """The top-k KL estimate (a lower bound of KL(original || replay)), per position."""
    missing_mass_mean: float | None
    missing_mass_max: float | None
    """The original's probability outside the tokens whose logprob both sides know."""
    tv_low_mean: float | None
    tv_high_mean: float | None
    """Bounds of the total variation distance that the missing mass allows, per position, averaged."""
    top1_compared: int
    """Positions where both sides list a top-1."""
    top1_agree: int
    would_flip: int
    """Positions where the recorded token is not the replay's greedy choice."""


@dataclass
class _Sums:
    positions: int = 0
    compared: int = 0
    abs_max: float = 0.0
    abs_sum: float = 0.0
    kl_n: int = 0
    kl_sum: float = 0.0
    kl_max: float = 0.0
    missing_sum: float = 0.0
    missing_max: float = 0.0
    tv_low_sum: float = 0.0
    tv_high_sum: float = 0.0
    top1_compared: int = 0
    top1_agree: int = 0
    flips: int = 0

    def add(self, other: _Sums) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(other, name)
            if name in ("abs_max", "kl_max", "missing_max"):
                setattr(self, name, max(getattr(self, name), value))
            else:
                setattr(self, name, getattr(self, name) + value)

    def statistics(self) -> Statistics:
        def mean(total: float, n: int) -> float | None:
            return total / n if n else None

        return Statistics(
            positions=self.positions,
            compared=self.compared,
            max_abs_delta=self.abs_max if self.compared else None,
            mean_abs_delta=mean(self.abs_sum, self.compared),
            kl_mean=mean(self.kl_sum, self.kl_n),
            kl_max=self.kl_max if self.kl_n else None,
            missing_mass_mean=mean(self.missing_sum, self.kl_n),
            missing_mass_max=self.missing_max if self.kl_n else None,
            tv_low_mean=mean(self.tv_low_sum, self.kl_n),
            tv_high_mean=mean(self.tv_high_sum, self.kl_n),
            top1_compared=self.top1_compared,
            top1_agree=self.top1_agree,
            would_flip=self.flips,
        )


@dataclass(frozen=True)
class TopKDivergence:
    """What the two top-k lists of one position say about the two distributions."""

    kl: float
    """KL(original || replay) of the distributions coarse-grained to the known tokens plus one
    bucket for the rest: a lower bound of the true KL (log-sum inequality)."""
    missing_mass: float
    """The original's mass outside the known tokens (the rest bucket): the true KL is
    ``kl + missing_mass * D``, D >= 0 being the divergence within the unseen tokens."""
    tv_low: float
    tv_high: float
    """The total variation distance lies in ``[tv_low, tv_high]``."""


def topk_divergence(
    token: int,
    original: float,
    replay: float,
    original_top: Iterable[tuple[int, float]],
    replay_top: Iterable[tuple[int, float]],
) -> TopKDivergence:
    """The estimators of one position (docs/diff.md): ``original``/``replay`` are the recorded
    token's logprobs, ``*_top`` each side's top-k as ``(token, logprob)``.

    The known tokens are those whose logprob both sides give: the recorded token, and
    every token in both top-k lists.
    """
    p = dict(original_top)
    q = dict(replay_top)
    p[token] = original
    q[token] = replay
    known = [t for t in p if t in q]
    kl = 0.0
    tv = 0.0
    p_seen = q_seen = 0.0
    for t in known:
        pt, qt = math.exp(p[t]), math.exp(q[t])
        p_seen += pt
        q_seen += qt
        kl += pt * (p[t] - q[t])
        tv += abs(pt - qt)
    p_rest = max(0.0, 1.0 - p_seen)
    q_rest = max(0.0, 1.0 - q_seen)
    if p_rest > EPSILON:
        kl += p_rest * math.log(p_rest / max(q_rest, EPSILON))
    return TopKDivergence(
        kl=max(0.0, kl),
        missing_mass=p_rest,
        tv_low=(tv + abs(p_rest - q_rest)) / 2,
        tv_high=min(1.0, (tv + p_rest + q_rest) / 2),
    )


@dataclass
class PromptReplay:
    """One prompt's figures and its would-flip positions."""

    prompt_id: str
    statistics: Statistics
    flips: list[Flip] = field(default_factory=list)


def compare_replay_row(original: Row, replay: Row) -> tuple[_Sums, list[Flip]]:
    """Every position of one prompt. The caller has checked that the token ids agree."""
    sums = _Sums(positions=len(replay.token_ids))
    flips: list[Flip] = []
    texts = {**(original.token_texts or {}), **(replay.token_texts or {})}
    o_lp = original.logprobs
    r_lp = replay.logprobs
    o_top = original.top_logprobs
    r_top = replay.top_logprobs
    ranks = replay.ranks
    for i, token in enumerate(replay.token_ids):
        a = o_lp[i] if o_lp is not None else None
        b = r_lp[i] if r_lp is not None else None
        rtop = r_top[i] if r_top is not None else []
        otop = o_top[i] if o_top is not None else []
        if a is not None and b is not None:
            delta = abs(b - a)
            sums.compared += 1
            sums.abs_sum += delta
            sums.abs_max = max(sums.abs_max, delta)
            if otop or rtop:
                d = topk_divergence(token, a, b, otop, rtop)
                sums.kl_n += 1
                sums.kl_sum += d.kl
                sums.kl_max = max(sums.kl_max, d.kl)
                sums.missing_sum += d.missing_mass
                sums.missing_max = max(sums.missing_max, d.missing_mass)
                sums.tv_low_sum += d.tv_low
                sums.tv_high_sum += d.tv_high
        if otop and rtop:
            sums.top1_compared += 1
            sums.top1_agree += otop[0][0] == rtop[0][0]
        rank = ranks[i] if ranks is not None else None
        if b is None or not rtop:
            continue
        best, best_lp = rtop[0]
        flips_here = rank > 1 if rank is not None else (best != token and best_lp >= b)
        if flips_here:
            sums.flips += 1
            flips.append(
                Flip(
                    index=i,
                    token=token,
                    token_text=texts.get(token),
                    rank=rank,
                    replay_top1=best,
                    replay_top1_text=texts.get(best),
                    logprob_original=a,
                    logprob_replay=b,
                    margin=best_lp - b,
                )
            )
    return sums, flips


@dataclass(frozen=True)
class SetupDifference:
    """A setup fact that differs between the original and the replay."""

    field: str
    original: object
    replay: object


_SETUP_FIELDS = ("backend.name", "backend.version", "model.id", "model.fingerprint", "dtype", "device",
                 "batch.size", "environment.fingerprint")  # fmt: skip
_NOT_SETUP = frozenset({"replay"})
"""``backend_settings`` members that describe the replay itself, not the setup."""


def setup_differences(original: Header, replay: Header) -> list[SetupDifference]:
    """The facts that change numerics and differ: none means the replay ran under the
    original's own setup, and what it measures is the prefill/decode baseline."""
    found = []
    for name in _SETUP_FIELDS:
        a, b = _field(original, name), _field(replay, name)
        if a != b:
            found.append(SetupDifference(name, a, b))
    settings_a = {k: v for k, v in original.backend_settings.items() if k not in _NOT_SETUP}
    settings_b = {k: v for k, v in replay.backend_settings.items() if k not in _NOT_SETUP}
    for key in sorted(set(settings_a) | set(settings_b)):
        if settings_a.get(key) != settings_b.get(key):
            found.append(SetupDifference(f"backend_settings.{key}", settings_a.get(key), settings_b.get(key)))
    return found


def _field(header: Header, dotted: str) -> object:
    value: object = header
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def compare_replay_rows(pairs: Iterable[tuple[Row, Row]]) -> tuple[Statistics, list[PromptReplay]]:
    """Figures over all pairs ``(original row, replay row)``, and per prompt."""
    total = _Sums()
    prompts = []
    for original, replay in pairs:
        sums, flips = compare_replay_row(original, replay)
        total.add(sums)
        prompts.append(PromptReplay(original.prompt_id, sums.statistics(), flips))
    return total.statistics(), prompts

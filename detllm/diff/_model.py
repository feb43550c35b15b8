"""The typed results of a comparison: what a diff report is made of.

Every part is a frozen msgspec Struct, so a report encodes to JSON and decodes back
without loss. ``formats/report-v1.md`` describes each field.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

Status = Literal[
    "identical",
    "logprobs_differ",
    "tokens_diverge",
    "stopped_early",
    "inputs_differ",
    "left_only",
    "right_only",
]
STATUSES: tuple[str, ...] = get_args(Status)
"""What happened to a prompt, as seen in the two traces."""

Classification = Literal[
    "input_mismatch",
    "unmatched",
    "decisive_flip",
    "near_tie_flip",
    "sampling_divergence",
    "stop_divergence",
    "inconclusive",
    "logprob_drift",
    "identical",
]
CLASSIFICATIONS: tuple[str, ...] = get_args(Classification)
"""What a prompt's difference is consistent with, most serious first: the overall
classification of a report is the first of these that any prompt has."""

TIER1_FAILURES = frozenset({"tokens_diverge", "stopped_early", "inputs_differ", "left_only", "right_only"})
"""Statuses that fail Tier 1 (and so Tier 2): the generated tokens differ or are missing."""

Cause = Literal["run_to_run", "batch_dependence", "environment", "different_setup"]
CAUSES: tuple[str, ...] = get_args(Cause)
"""What the header comparison attributes a difference to."""

Category = Literal["setup", "batch", "backend", "determinism", "environment", "recording", "ignored"]
CATEGORIES: tuple[str, ...] = get_args(Category)
"""The kinds of header field: which cause a difference in each points to."""


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class Token(_Struct):
    """A token: its id and, when the trace has it, its text."""

    id: int
    text: str | None = None


class TopEntry(_Struct):
    """One entry of a step's top-k list."""

    id: int
    text: str | None
    logprob: float


class Side(_Struct):
    """One side at the first divergent token.

    ``token`` is None when this side has no token there (it stopped). ``logprob`` is
    its own logprob of its token; ``other_logprob`` the other side's logprob of the
    same token, when the other side lists it in its top-k; ``rank_in_other`` its
    1-based rank there. ``margin`` is this side's top-1 minus top-2 logprob.
    """

    token: Token | None
    logprob: float | None
    other_logprob: float | None
    rank_in_other: int | None
    margin: float | None
    top: list[TopEntry]
    continuation: list[Token]
    length: int
    finish_reason: str


class Divergence(_Struct):
    """The first token index where the two sides differ, with its evidence."""

    index: int
    context: list[Token]
    """The common tokens just before ``index`` (``context_start`` is the first one's index)."""
    context_start: int
    left: Side
    right: Side


class Drift(_Struct):
    """How far the chosen tokens' logprobs moved over the tokens both sides share.

    ``compared``: tokens compared (the common prefix, or the whole sequence when the
    tokens are equal). ``first_index``: the first token whose logprob differs at all.
    ``max_abs`` / ``max_index`` / ``rms``: the largest |delta logprob|, where, and the
    root mean square. ``top_first_index``: the first step whose top-k list differs.
    """

    compared: int
    first_index: int | None
    max_abs: float
    max_index: int | None
    rms: float
    top_first_index: int | None


class Evidence(_Struct):
    """The numbers behind a classification, and the sentence they support.

    ``noise``: the noise level (``noise_source``: ``drift`` when measured before the
    divergence, ``floor`` when the dtype's floor was larger). ``tolerance``:
    ``near_tie_factor * noise``. ``left_lead``: how much the left side preferred its
    token over the right's token (its logprob minus the right token's logprob on the
    left); ``right_lead`` likewise. ``gap`` = ``left_lead + right_lead``: how far the
    two sides' preferences are apart. ``gap_is_bound``: a token was outside the other
    side's top-k, so the gap is a lower bound. ``step_max_abs``: the largest
    |delta logprob| among tokens both sides list at the step.
    """

    reason: str
    noise: float | None = None
    noise_source: Literal["drift", "floor"] | None = None
    tolerance: float | None = None
    left_lead: float | None = None
    right_lead: float | None = None
    gap: float | None = None
    gap_is_bound: bool = False
    step_max_abs: float | None = None


class InputDifference(_Struct):
    """How the prompts' input token ids differ."""

    index: int
    """The first input position that differs (the shorter length when one is a prefix)."""
    left_length: int
    right_length: int
    prompts_differ: bool | None
    """Whether the prompt texts differ; None when a trace does not record them."""


class PromptResult(_Struct):
    """The comparison of one prompt: its status, its classification and the evidence.

    ``left_index`` / ``right_index``: the row's 0-based position in each trace.
    """

    prompt_id: str
    status: Status
    classification: Classification
    left_index: int | None
    right_index: int | None
    divergence: Divergence | None = None
    drift: Drift | None = None
    evidence: Evidence | None = None
    inputs: InputDifference | None = None
    notes: list[str] = []


class HeaderDifference(_Struct):
    """One header field that differs. ``absent`` names the side that lacks it."""

    field: str
    left: Any
    right: Any
    absent: Literal["left", "right"] | None
    category: Category
    note: str | None = None


class Attribution(_Struct):
    """What the header comparison says a difference would be consistent with."""

    cause: Cause
    factors: list[str]
    """The categories of the differing fields that count (``ignored`` never does)."""
    text: str
    settings: list[str] = []
    """The factors by name (``model``, ``dtype``, ``seed``, ``max_new_tokens``, ``batch_size``,
    ``backend``, ``environment``, ..., and ``input_ids`` when rows show other inputs), in field order.
    Added in report version 1.1."""


class Setup(_Struct):
    """The header comparison: every differing field, and the attribution."""

    differences: list[HeaderDifference]
    attribution: Attribution


class TraceInfo(_Struct):
    """Which trace a side is, and the facts a reader wants next to its name."""

    path: str
    created_at: str
    backend: str
    model: str
    dtype: str
    device: str
    batch_size: int
    do_sample: bool
    logprobs: Literal["raw", "processed", "none"]
    top_k: int
    rows: int
    complete: bool


class PositionCount(_Struct):
    """How many prompts (or runs) first diverge at token ``index``."""

    index: int
    count: int


class Summary(_Struct):
    """Counts over every prompt. ``statuses`` and ``classifications`` list every name."""

    left_rows: int
    right_rows: int
    compared: int
    statuses: dict[str, int]
    classifications: dict[str, int]
    divergence_positions: list[PositionCount]


class Verdict(_Struct):
    """The overall answer: the most serious classification and each tier's result.

    ``tier2`` is None when a trace records no logprobs, so Tier 2 cannot be judged.
    """

    classification: str
    tier1: bool
    tier2: bool | None
    text: str


class Producer(_Struct):
    """The program that wrote the report, and its version."""

    name: str
    version: str

"""The typed results of aggregating many traces of the same prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from ._model import Attribution, Category, PositionCount, Producer, PromptResult, Token, TraceInfo
from ._report import ReportOptions, ReportRecord, TieredVerdict, Version


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class ValueRuns(_Struct):
    """One value a header field takes, and the runs (by index) that have it."""

    value: Any
    runs: list[int]


class FieldVariation(_Struct):
    """A header field whose value is not the same in every run."""

    field: str
    category: Category
    values: list[ValueRuns]


class AggregateSetup(_Struct):
    """The header fields that vary across runs, and what that points to."""

    varying: list[FieldVariation]
    attribution: Attribution


class Branch(_Struct):
    """Where completions split: the runs that continue with ``token`` (None: they stop)."""

    token: Token | None
    runs: int
    variants: list[int]


class Split(_Struct):
    """The completions agree on ``index`` tokens, then go their ways."""

    index: int
    context: list[Token]
    branches: list[Branch]
    text: str


class Variant(_Struct):
    """One distinct completion (token ids and finish reason) of a prompt.

    Variant 0 is the majority. ``comparison`` is the diff of this variant's first
    run (``run``) against the majority's first run (``reference_run``).
    """

    index: int
    runs: list[int]
    tokens: int
    finish_reason: str
    logprob_variants: int
    first_divergence: int | None
    run: int
    reference_run: int
    comparison: PromptResult | None


class PromptAggregate(_Struct):
    """One prompt across every run.

    ``completions``: distinct token sequences. ``logprob_groups``: distinct logprob
    vectors (within ``atol``) among the runs that agree with the majority's tokens.
    """

    prompt_id: str
    runs: int
    missing: list[int]
    completions: int
    majority_runs: int
    logprob_groups: int | None
    classification: str
    tier1: bool
    tier2: bool | None
    split: Split | None
    variants: list[Variant]


class AggregateSummary(_Struct):
    """Counts over every prompt and run."""

    runs: int
    prompts: int
    tier1_stable: int
    """Prompts with one completion in every run."""
    tier2_stable: int | None
    """Prompts whose majority-token runs have one logprob vector; None without logprobs."""
    runs_agreeing: int
    """Runs that give the majority's completion for every prompt."""
    classifications: dict[str, int]
    divergence_positions: list[PositionCount]
    """Runs whose completion leaves the majority's, by the first token where it does."""


class AggregateVerdict(_Struct):
    """The overall answer: the most serious classification and each tier's result."""

    classification: str
    tier1: bool
    tier2: bool | None
    text: str


class AggregateReport(msgspec.Struct, ReportRecord, TieredVerdict, frozen=True, kw_only=True):
    """The JSON form of an aggregate report (``kind: "aggregate"``)."""

    # An aggregate report is one record: what the N-way engine returns (many traces of the
    # same prompts, compared with the majority of each prompt), what the renderers read and
    # what ``report.json`` holds, its fields in the document's order. The engine's
    # ``prompts`` is a compact read-only sequence (most prompts are alike); a loaded
    # report's is a list. Either encodes as the list (:func:`prompts_as_list`).

    KIND = "aggregate"

    format: Literal["detllm.report"]
    version: Version
    kind: Literal["aggregate"]
    producer: Producer
    options: ReportOptions
    runs: list[TraceInfo]
    setup: AggregateSetup
    verdict: AggregateVerdict
    summary: AggregateSummary
    notes: list[str]
    prompts: Sequence[PromptAggregate]


"""The typed results of aggregating many traces of the same prompts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from .._version import __version__
from ._model import Attribution, Category, PositionCount, Producer, PromptResult, Token, TraceInfo
from ._options import DiffOptions
from ._report import REPORT_FORMAT, REPORT_VERSION, ReportOptions, TieredVerdict, Version, convert_document


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


class AggregateDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON form of an aggregate report (``kind: "aggregate"``)."""

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
    prompts: list[PromptAggregate]


@dataclass(frozen=True, eq=False)
class AggregateReport(TieredVerdict):
    """Many traces of the same prompts, compared with the majority of each prompt."""

    options: DiffOptions
    runs: list[TraceInfo]
    setup: AggregateSetup
    verdict: AggregateVerdict
    summary: AggregateSummary
    prompts: Sequence[PromptAggregate]
    notes: tuple[str, ...] = ()
    producer: Producer = field(default_factory=lambda: Producer(name="detllm", version=__version__))

    kind = "aggregate"

    def document(self, *, with_prompts: bool = True) -> AggregateDocument:
        return AggregateDocument(
            format=REPORT_FORMAT,
            version=REPORT_VERSION,
            kind="aggregate",
            producer=self.producer,
            options=ReportOptions.of(self.options),
            runs=self.runs,
            setup=self.setup,
            verdict=self.verdict,
            summary=self.summary,
            notes=list(self.notes),
            prompts=list(self.prompts) if with_prompts else [],
        )

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.document())  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Any, *, path: str | os.PathLike[str] = "<report>") -> AggregateReport:
        document = convert_document(data, AggregateDocument, "aggregate", os.fspath(path))
        return cls(
            options=document.options.to_options(),
            runs=document.runs,
            setup=document.setup,
            verdict=document.verdict,
            summary=document.summary,
            prompts=document.prompts,
            notes=tuple(document.notes),
            producer=document.producer,
        )

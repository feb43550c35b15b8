"""The typed results of a check: repeats, a batch sweep, and the three answers."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._model import PositionCount, Producer, PromptResult, Setup, TraceInfo
from ._options import DiffOptions
from ._report import ReportOptions, ReportRecord, Version
from ..errors import ExitCode, UsageError
from ._aggregate_model import Split
from ._sweep_model import SweepReport, sweep_answer
from ._concurrency import ConcurrencyAnswer
from ._check_replay import CheckReplay


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class CheckSettings(_Struct, omit_defaults=True):
    """What the check was asked to do."""

    model: str
    backend: str
    runs: int
    """Repeats at the first batch size, in-order."""
    batch_sizes: list[int]
    """The first is the repeats' batch size; the others are swept."""
    compositions: list[str]
    """Compositions run besides ``in-order`` at every batch size above 1."""
    isolate: bool
    """Each repeat ran in a process of its own."""
    concurrency: list[int] | None = None
    """A server check's levels (requests in flight); the first is the repeats'. Null otherwise."""


class CheckDeterminism(_Struct):
    """The determinism controls of the check's own process (``determinism_applied.json``)."""

    mode: Literal["strict", "best-effort", "off"]
    complete: bool
    missing: dict[str, str]
    """Controls the runs needed that could not be applied, with the reason."""


class CheckRun(_Struct, omit_defaults=True):
    """One trace of the check. Run 0 is the baseline every other run is compared with."""

    name: str
    role: Literal["repeat", "sweep", "concurrency"]
    batch_size: int
    composition: str
    repeat: int | None
    """The repeat's number (0 is the baseline); null for a sweep run."""
    isolated: bool
    """Recorded in a process of its own (``--isolate``), not the check's."""
    neighbours_changed: int | None
    """Prompts whose batch shares none or only some of the prompts it shared in run 0
    (their batch-mates differ); null when the trace records no placements."""
    trace: TraceInfo
    """``trace.path`` is relative to the check directory."""
    concurrency: int | None = None
    """Requests in flight while it was recorded (a server check); null otherwise."""


class CheckComparison(_Struct):
    """One run compared with run 0 by the diff engine."""

    question: Literal["repeat", "batch", "concurrency"]
    """``repeat``: another repeat at the same batch size and composition (Tier 1 and 2);
    ``batch``: another batch size or composition (batch invariance); ``concurrency``:
    a run of a server check at another number of requests in flight."""
    left: int
    right: int
    classification: str
    tier1: bool
    tier2: bool | None
    statuses: dict[str, int]
    divergence_positions: list[PositionCount]
    setup: Setup


class CheckDivergence(_Struct):
    """A prompt's result in one comparison that is not ``identical``."""

    comparison: int
    """Index into ``comparisons``."""
    result: PromptResult


class CheckPrompt(_Struct):
    """One prompt across every run of the check.

    ``completions``: distinct token sequences over all runs; ``majority_runs``: runs
    giving the most common one; ``logprob_groups``: distinct logprob vectors among
    them (null without logprobs). ``repeat`` and ``batch``: the most serious
    classification of the prompt in the repeat and batch comparisons (null when
    there are none).
    """

    prompt_id: str
    completions: int
    majority_runs: int
    logprob_groups: int | None
    repeat: str | None
    batch: str | None
    split: Split | None
    divergences: list[CheckDivergence]


class CheckSummary(_Struct):
    """Counts over every prompt.

    ``repeat_tokens_stable`` / ``repeat_logprobs_stable``: prompts identical in tokens
    (and in logprobs) across the repeats; ``batch_tokens_stable`` /
    ``batch_logprobs_stable``: the same across every sweep run and run 0. Null when the
    question was not asked (one run; no sweep) or cannot be judged (no logprobs).
    """

    runs: int
    prompts: int
    repeat_tokens_stable: int | None
    repeat_logprobs_stable: int | None
    batch_tokens_stable: int | None
    batch_logprobs_stable: int | None
    classifications: dict[str, int]
    """Per prompt: its most serious classification over every comparison."""
    divergence_positions: list[PositionCount]
    """Comparisons whose tokens leave run 0's, by the first token where they do."""


class CheckVerdict(_Struct, omit_defaults=True):
    """The three answers and what they support.

    ``tier1`` / ``tier2``: the repeats agree in tokens / also in logprobs (null with
    one run, or ``tier2`` without logprobs). ``batch_invariant`` /
    ``batch_invariant_logprobs``: every sweep run agrees with run 0 in tokens / also
    in logprobs (null without a sweep). ``claim``: the strongest repeatability the
    evidence supports once the determinism record is taken into account; ``downgraded``
    when missing controls lowered it.
    """

    classification: str
    tier1: bool | None
    tier2: bool | None
    batch_invariant: bool | None
    batch_invariant_logprobs: bool | None
    claim: Literal["tier2", "tier1", "none"]
    downgraded: bool
    text: str
    concurrency_invariant: bool | None = None
    """A server check: every run at every level gave each prompt the same tokens (null otherwise)."""
    concurrency_invariant_logprobs: bool | None = None


class CheckReport(msgspec.Struct, ReportRecord, frozen=True, kw_only=True):
    """The JSON form of a check report (``kind: "check"``)."""

    # A check report is one record: what the engine returns, the renderers read and
    # ``report.json`` holds (repeated runs and a batch sweep of one setup, compared with
    # run 0). Its fields are the document's, in the document's order.

    KIND = "check"

    format: Literal["detllm.report"]
    version: Version
    kind: Literal["check"]
    producer: Producer
    options: ReportOptions
    check: CheckSettings
    determinism: CheckDeterminism
    runs: list[CheckRun]
    verdict: CheckVerdict
    summary: CheckSummary
    comparisons: list[CheckComparison]
    notes: list[str]
    prompts: list[CheckPrompt]
    sweep: SweepReport | None = None
    """The engine-setting sweep (``--sweep``); null when none was asked for."""
    concurrency: ConcurrencyAnswer | None = None
    replay: CheckReplay | msgspec.UnsetType = msgspec.UNSET
    """Replay-measured margins at each divergence (``--replay``); absent when the check was not replayed
    (so reports of checks without ``--replay`` are unchanged)."""

    @classmethod
    def of(cls, options: DiffOptions, **parts: Any) -> CheckReport:
        """A check report of this detLLM, judged with ``options``; ``parts``: the other fields
        (``replay=None`` for a check not replayed)."""
        if parts.get("replay", msgspec.UNSET) is None:
            parts["replay"] = msgspec.UNSET
        return super().of(options, **parts)

    @property
    def replayed(self) -> CheckReplay | None:
        """The replay-measured margins, or None when the check was not replayed."""
        return None if isinstance(self.replay, msgspec.UnsetType) else self.replay

    @property
    def classification(self) -> str:
        return self.verdict.classification

    def answers(self, tier: int | None = None) -> list[bool | None]:
        """The asked questions' results at ``tier``: repeatability, then batch invariance."""
        tier = self.options.tier if tier is None else tier
        if tier not in (1, 2):
            raise UsageError(f"tier must be 1 or 2, got {tier!r}")
        v = self.verdict
        answers: list[bool | None] = []
        if any(c.question == "repeat" for c in self.comparisons):
            answers.append(v.tier1 if tier == 1 else v.tier2)
        if any(c.question == "batch" for c in self.comparisons):
            answers.append(v.batch_invariant if tier == 1 else v.batch_invariant_logprobs)
        if self.concurrency is not None:
            answers.append(v.concurrency_invariant if tier == 1 else v.concurrency_invariant_logprobs)
        if self.sweep is not None:
            answers.append(sweep_answer(self.sweep, tier))
        return answers

    def passed(self, tier: int | None = None) -> bool:
        """Whether every question asked holds at ``tier`` (default: the report's tier)."""
        return all(a is True for a in self.answers(tier))

    def exit_code(self, tier: int | None = None) -> int:
        """0 when every question holds at ``tier``, 1 when one does not, 2 when one cannot be judged."""
        answers = self.answers(tier)
        if False in answers:
            return int(ExitCode.DIFFERENT)
        if None in answers:
            return int(ExitCode.TROUBLE)
        return int(ExitCode.OK)


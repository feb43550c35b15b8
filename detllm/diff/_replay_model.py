"""The replay report (``kind: "replay"``): a trace against a teacher-forced replay of it."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._model import Producer
from ._replay import Flip, Statistics
from ._report import Version


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class ReplaySide(_Struct):
    """One of the two traces, and the setup facts a reader wants next to its name."""

    path: str
    digest: str | None
    """The footer digest (the original's is what the replay names)."""
    backend: str
    model: str
    dtype: str
    device: str
    batch_size: int
    logprobs: Literal["raw", "processed", "none"]
    top_k: int
    rows: int


class ReplaySetupDifference(_Struct):
    """A fact that changes numerics and differs between the two setups (null: not set)."""

    field: str
    original: Any
    replay: Any


class ReplayPrompt(_Struct):
    prompt_id: str
    statistics: Statistics
    flips: list[Flip]
    """Every position of this prompt where the recorded token would not be chosen greedily
    under the replay's setup, in order."""


class ReplayVerdict(_Struct):
    baseline: bool
    """True when the replay ran under the original's own setup: the drift measured is then
    the prefill/decode baseline (the noise floor of replay comparisons), not a setup difference."""
    all_rank_1: bool
    """Every recorded token is the replay's greedy choice (no position would flip)."""
    text: str


class ReplayDocument(_Struct):
    """The JSON form of a replay comparison (``kind: "replay"``): exact figures."""

    format: Literal["detllm.report"]
    version: Version
    kind: Literal["replay"]
    producer: Producer
    original: ReplaySide
    replay: ReplaySide
    setup: list[ReplaySetupDifference]
    """Empty: the same setup (a baseline replay)."""
    verdict: ReplayVerdict
    summary: Statistics
    notes: list[str]
    prompts: list[ReplayPrompt]

    def exit_code(self) -> int:
        """0 when no recorded token would flip under the replay, 1 when some would (as for the
        other report kinds, a method)."""
        return 0 if self.verdict.all_rank_1 else 1

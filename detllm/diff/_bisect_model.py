"""The bisect report (``kind: "bisect"``): which setting differences reproduce a divergence."""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

from ..errors import ExitCode
from ._model import Producer
from ._report import ReportOptions, Version

Outcome = Literal["reproduces", "partial", "elsewhere", "cleared", "not_run"]
"""``reproduces``: the rerun diverges from A on every prompt A and B diverge on;
``partial``: on some of them; ``elsewhere``: only on other prompts; ``cleared``: on no
prompt (the settings alone change nothing at the tier); ``not_run``: the rerun could not
be done, or the ``--max-runs`` budget ran out first."""
OUTCOMES: tuple[str, ...] = get_args(Outcome)


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class BisectSide(_Struct):
    directory: str
    trace: str
    """The trace compared (``trace.jsonl``, or run 0 of a check directory)."""


class SettingDifference(_Struct):
    """One run setting whose value differs between A and B (null: not set on that side)."""

    setting: str
    left: Any
    right: Any


class BisectRun(_Struct):
    """One rerun of A's settings with some of B's applied, compared with A's trace."""

    settings: list[str]
    """The settings taken from B (empty: the control, A's own settings rerun)."""
    name: str
    """``setting=value`` items joined by ``, `` (``control`` for the control)."""
    outcome: Outcome
    reason: str | None
    trace: str | None
    """Relative to the bisect directory."""
    reproduced: int
    """How many of the prompts A and B diverge on diverge in this rerun too."""
    of: int
    extra: int
    """Prompts that diverge in this rerun but not between A and B."""
    divergent: list[str]
    classification: str | None


class BisectObserved(_Struct):
    prompts: int
    divergent: list[str]
    """Prompts whose tokens (Tier 1; at Tier 2 also logprobs) differ between A and B."""
    classification: str


class BisectBudget(_Struct):
    max_runs: int
    used: int
    untried: list[str]
    """Candidates not run for want of budget, by name."""


class BisectVerdict(_Struct):
    explained_by: list[str] | None
    """The smallest set of settings that reproduces every diverging prompt; null when none found."""
    text: str


class BisectDocument(_Struct):
    """The JSON form of a bisect (``kind: "bisect"``), written as ``report.json``."""

    format: Literal["detllm.report"]
    version: Version
    kind: Literal["bisect"]
    producer: Producer
    options: ReportOptions
    left: BisectSide
    right: BisectSide
    differences: list[SettingDifference]
    observed: BisectObserved
    control: BisectRun | None
    """A's settings rerun: diverging prompts here mean reruns are not repeatable, and weaken every other run's evidence."""
    ranking: list[BisectRun]
    """Best explanation first: most diverging prompts reproduced, then fewest extra, then fewest settings."""
    budget: BisectBudget
    verdict: BisectVerdict

    def exit_code(self) -> int:
        """0: A and B agree (nothing to bisect); 1: they diverge (the ranking says why);
        2: no rerun could be done."""
        if not self.observed.divergent:
            return int(ExitCode.OK)
        if self.ranking and all(r.outcome == "not_run" for r in self.ranking):
            return int(ExitCode.TROUBLE)
        return int(ExitCode.DIFFERENT)

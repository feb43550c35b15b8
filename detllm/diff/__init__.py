"""Offline comparison of traces: where outputs diverge, and what that is consistent with.

``diff_traces(left, right)`` streams two traces, pairs rows by prompt id, and returns a
:class:`DiffReport`: the header differences with their attribution, each prompt's status
and classification with the evidence behind it, and each tier's result.
``aggregate_traces(paths)`` compares many traces of the same prompts (the N-way engine);
``build_check_report`` and ``rebuild_check_report`` judge a check directory from its traces;
``build_replay_report`` compares a trace with a teacher-forced replay of it. The records
these return live in :mod:`detllm.diff.model`, and what they read of a directory in
:mod:`detllm.diff.inputs`. Nothing here imports torch, transformers or vLLM.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._aggregate import aggregate_traces
from ._check import build_check_report, rebuild_check_report
from ._engine import compare_rows, diff_traces
from ._header import compare_headers, compare_setup
from ._options import NOISE_FLOORS, DiffOptions
from .model import AggregateReport, CheckReport, DiffReport

if TYPE_CHECKING:
    from ._replay_model import ReplayDocument
    from ._replay_report import build_replay_report

__getattr__ = lazy_names(__name__, {"ReplayDocument": "._replay_model", "build_replay_report": "._replay_report"})
"""The replay comparison loads when first used: a plain diff never needs it."""

__all__ = [
    "NOISE_FLOORS",
    "AggregateReport",
    "CheckReport",
    "DiffOptions",
    "DiffReport",
    "ReplayDocument",
    "aggregate_traces",
    "build_check_report",
    "build_replay_report",
    "compare_headers",
    "compare_rows",
    "compare_setup",
    "diff_traces",
    "rebuild_check_report",
]

"""Offline comparison of two traces: where outputs diverge, and what that is consistent with.

``diff_traces(left, right)`` streams both traces, pairs rows by prompt id, and
returns a :class:`DiffReport`: the header differences with their attribution,
each prompt's status and classification with the evidence behind it, and each
tier's result. Nothing here imports torch, transformers or vLLM.
"""

from ._engine import compare_rows, diff_traces
from ._header import compare_headers, compare_setup
from ._locate import locate_trace
from ._model import (
    CATEGORIES,
    CAUSES,
    CLASSIFICATIONS,
    STATUSES,
    Attribution,
    Divergence,
    Drift,
    Evidence,
    HeaderDifference,
    InputDifference,
    PositionCount,
    PromptResult,
    Setup,
    Side,
    Summary,
    Token,
    TopEntry,
    TraceInfo,
    Verdict,
)
from ._options import NOISE_FLOORS, DiffOptions
from ._report import REPORT_FORMAT, REPORT_VERSION, DiffReport
from ._results import PromptResults

__all__ = [
    "CATEGORIES",
    "CAUSES",
    "CLASSIFICATIONS",
    "NOISE_FLOORS",
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "STATUSES",
    "Attribution",
    "DiffOptions",
    "DiffReport",
    "Divergence",
    "Drift",
    "Evidence",
    "HeaderDifference",
    "InputDifference",
    "PositionCount",
    "PromptResult",
    "PromptResults",
    "Setup",
    "Side",
    "Summary",
    "Token",
    "TopEntry",
    "TraceInfo",
    "Verdict",
    "compare_headers",
    "compare_rows",
    "compare_setup",
    "diff_traces",
    "locate_trace",
]


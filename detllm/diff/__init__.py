"""Offline comparison of two traces: where outputs diverge, and what that is consistent with.

``diff_traces(left, right)`` streams both traces, pairs rows by prompt id, and
returns a :class:`DiffReport`: the header differences with their attribution,
each prompt's status and classification with the evidence behind it, and each
tier's result. Nothing here imports torch, transformers or vLLM.
"""

from ._analysis import Context, compare
from ._engine import diff_traces
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
from ._rows import from_row

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


def compare_rows(left, right, left_header, right_header, options=None):  # type: ignore[no-untyped-def]
    """Compare two :class:`~detllm.trace.Row` objects of one prompt, without files.

    For callers that hold rows in memory (a check comparing its repeats). Raises
    ``ValueError`` when a row breaks the format's rules.
    """
    from ._rows import RowProblem

    ctx = Context.of(left_header, right_header, options or DiffOptions())
    try:
        return compare(ctx, from_row(left), from_row(right), 0, 0)
    except RowProblem as problem:
        raise ValueError(f"{problem.side} row {left.prompt_id!r}: {problem.field}: {problem.problem}") from None

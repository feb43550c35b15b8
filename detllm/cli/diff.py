"""Compare two traces: where outputs diverge, and what that is consistent with.

LEFT and RIGHT are trace files or run directories holding one trace. Rows are
paired by prompt id. When RIGHT is a replay of LEFT (detllm replay: its header
names LEFT's footer digest), every position is compared instead: the logprob drift,
a top-k KL estimate, top-1 agreement and the positions where the recorded token
would not be chosen greedily under the replay's setup (docs/replay.md). Exit
status: 0 when the traces agree at the chosen tier (a replay: no token would flip),
1 when they do not, 2 for unreadable or invalid input and usage errors.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from .._escape import text as escape
from ..diff import diff_traces
from ..diff.inputs import locate_trace
from ..errors import NewerMinorVersionWarning, TraceFormatError
from ..reader import read_header
from ._report_options import add_comparison_arguments, add_output_arguments, as_trouble, emit, options_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("left", metavar="LEFT", help="trace file, or run directory holding one trace")
    parser.add_argument("right", metavar="RIGHT", help="trace file, or run directory holding one trace (or a replay of LEFT)")
    add_comparison_arguments(parser)
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    try:
        report = _replay_report(args)
        if report is None:
            report = diff_traces(args.left, args.right, options)
    except TraceFormatError as error:
        raise as_trouble(error) from None
    emit(report, args)
    return report.exit_code()


def _is_replay(path: str, allow_incomplete: bool) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NewerMinorVersionWarning)
        return read_header(locate_trace(path, allow_incomplete=allow_incomplete)).replay is not None


def _replay_report(args: argparse.Namespace) -> Any:
    """The replay comparison when one side is a replay of the other (either order); None for a plain diff."""
    if _is_replay(args.right, args.allow_incomplete):
        original, replayed = args.left, args.right
    elif _is_replay(args.left, args.allow_incomplete):
        original, replayed = args.right, args.left  # REPLAY ORIGINAL: the headers say which is which
    else:
        return None
    from ..diff import build_replay_report
    from ..diff.inputs import NotAReplay

    try:
        return build_replay_report(original, replayed)
    except NotAReplay as error:
        print(escape(f"detllm: warning: {error.reason}: comparing them as two runs"), file=sys.stderr)
        return None

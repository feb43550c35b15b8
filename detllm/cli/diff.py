"""Compare two traces: where outputs diverge, and what that is consistent with.

LEFT and RIGHT are trace files or run directories holding one trace. Rows are
paired by prompt id. Exit status: 0 when the traces agree at the chosen tier,
1 when they do not, 2 for unreadable or invalid input and usage errors.
"""

from __future__ import annotations

import argparse

from ..diff import diff_traces
from ..errors import TraceFormatError
from ._report_options import add_comparison_arguments, add_output_arguments, as_trouble, emit, options_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("left", metavar="LEFT", help="trace file, or run directory holding one trace")
    parser.add_argument("right", metavar="RIGHT", help="trace file, or run directory holding one trace")
    add_comparison_arguments(parser)
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    try:
        report = diff_traces(args.left, args.right, options)
    except TraceFormatError as error:
        raise as_trouble(error) from None
    emit(report, args)
    return report.exit_code()

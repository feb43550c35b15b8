"""Find which of the settings that differ between two runs make them diverge.

A and B are run or check directories (for a check, its run 0) whose outputs diverge.
Their run_config.json files are compared, every setting that differs is listed, and
A's settings are rerun with one of B's values at a time, each in a fresh process (then
two at a time when no single one explains the divergence), within --max-runs. Each
rerun is compared with A by the diff engine, and the settings are ranked by how many
of the diverging prompts they reproduce. A control rerun of A comes first. Writes the
bisect directory: traces/, report.json (kind bisect), report.txt, report.md, report.html. Exit
status: 0 when A and B do not diverge, 1 when they do (the ranking says why), 2 when
nothing could be rerun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..capture.bisect import bisect, default_out
from ..capture.check import _run_isolated
from ..diff.options import CHECK_FIELDS, add_comparison_flags, options_from
from ..report import DEFAULT_MAX_PROMPTS, write_report_dir
from ._report_options import HTML_HELP, print_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("left", metavar="A", help="run or check directory")
    parser.add_argument("right", metavar="B", help="run or check directory whose output diverges from A's")
    parser.add_argument("--max-runs", type=int, default=16, metavar="N", help="reruns at most, the control included (default: %(default)s)")
    parser.add_argument("--no-pairs", action="store_true", help="try single settings only")
    add_comparison_flags(parser, CHECK_FIELDS, help={
        "tier": "1: a divergence is other tokens (default); 2: other logprobs too",
        "atol": "logprobs within X count as equal (default 0: bitwise)",
    })
    parser.add_argument("--out", metavar="DIR", help="bisect directory to create (default: bisect/<UTC time>)")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print the JSON report")
    formats.add_argument("--markdown", action="store_true", help="print Markdown, ready for a GitHub issue")
    formats.add_argument("--html", action="store_true", help=HTML_HELP)
    parser.set_defaults(max_prompts=DEFAULT_MAX_PROMPTS)  # every rerun is listed; print_report reads it
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing, no progress either; the exit status tells")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else default_out()

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"detllm bisect: {text}", file=sys.stderr, flush=True)

    document = bisect(
        args.left,
        args.right,
        out=out,
        run_isolated=_run_isolated,
        max_runs=args.max_runs,
        options=options_from(args),
        pairs=not args.no_pairs,
        progress=progress,
    )
    write_report_dir(document, out, command=args.command_line)
    if not args.quiet:
        print_report(document, args, command=args.command_line)
        print(f"detllm: bisect directory {out}", file=sys.stderr)
    return document.exit_code()

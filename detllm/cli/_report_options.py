"""Options shared by ``diff`` and ``report``: tiers, thresholds and outputs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..diff import DiffOptions
from ..diff.options import add_comparison_flags
from ..diff.options import options_from as comparison_options
from ..errors import InputError, TraceFormatError, UsageError
from ..report import DEFAULT_MAX_PROMPTS, render_html, render_markdown, render_text, write_json, write_report_dir

HTML_HELP = "print one self-contained HTML page (no scripts, loads nothing); redirect it to a file"


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    add_comparison_flags(parser.add_argument_group("comparison"))


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    formats = group.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print the versioned JSON report")
    formats.add_argument("--markdown", action="store_true", help="print Markdown, ready for a GitHub issue")
    formats.add_argument("--html", action="store_true", help=HTML_HELP)
    group.add_argument("--out", metavar="DIR",
                       help="also write report.json, report.txt, report.md, report.html and diffs/first_divergence.json to DIR")
    group.add_argument("--max-prompts", type=int, default=DEFAULT_MAX_PROMPTS, metavar="N",
                       help="prompts shown in full in text and Markdown (default %(default)s; JSON has all)")
    group.add_argument("-q", "--quiet", action="store_true", help="print nothing; the exit status tells")


def options_from(args: argparse.Namespace) -> DiffOptions:
    if args.max_prompts < 0:
        raise UsageError(f"--max-prompts must be >= 0, got {args.max_prompts}")
    return comparison_options(args)


def emit(report: Any, args: argparse.Namespace, *, command: list[str] | None = None) -> None:
    """Print the report in the chosen format and write ``--out`` (``command``: for the HTML page)."""
    if args.out:
        write_report_dir(report, args.out, max_prompts=args.max_prompts, command=command)
    if not args.quiet:
        print_report(report, args, command=command)


def print_report(report: Any, args: argparse.Namespace, *, command: list[str] | None = None) -> None:
    """The report on stdout: JSON (``--json``), Markdown (``--markdown``), HTML (``--html``;
    ``command`` fills its "how to reproduce" box) or text."""
    try:
        if args.json:
            write_json(report, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        elif args.markdown:
            sys.stdout.write(render_markdown(report, max_prompts=args.max_prompts))
        elif args.html:
            sys.stdout.write(render_html(report, command=command))
        else:
            sys.stdout.write(render_text(report, max_prompts=args.max_prompts))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``detllm diff a b | head``): the verdict still decides the exit status.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def as_trouble(error: TraceFormatError) -> InputError:
    """A format error as diff and report see it: trouble (exit 2), not a verdict."""
    return InputError(str(error))

"""Options shared by ``diff`` and ``report``: tiers, thresholds and outputs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..diff import DiffOptions
from ..errors import InputError, TraceFormatError, UsageError
from ..report import DEFAULT_MAX_PROMPTS, render_html, render_markdown, render_text, write_json, write_report_dir

HTML_HELP = "print one self-contained HTML page (no scripts, loads nothing); redirect it to a file"


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("comparison")
    group.add_argument("--tier", type=int, choices=(1, 2), default=DiffOptions.tier,
                       help="1: fail on token differences only (default); 2: also on logprob differences")
    group.add_argument("--atol", type=float, default=DiffOptions.atol, metavar="X",
                       help="logprobs within X count as equal at Tier 2 (default 0: bitwise)")
    group.add_argument("--near-tie-factor", type=float, default=DiffOptions.near_tie_factor, metavar="F",
                       help="a flip is a near tie when its gap is at most F x the noise (default %(default)g)")
    group.add_argument("--noise-floor", type=float, default=None, metavar="X",
                       help="the smallest noise level assumed (default: by dtype, see docs/diff.md)")
    group.add_argument("--context", type=int, default=DiffOptions.context_tokens, metavar="N",
                       help="tokens of common context kept at a divergence (default %(default)s)")
    group.add_argument("--continuation", type=int, default=DiffOptions.continuation_tokens, metavar="N",
                       help="tokens of each side's continuation kept (default %(default)s)")
    group.add_argument("--allow-incomplete", action="store_true",
                       help="read traces without a footer (a run that did not finish); the report says so")
    group.add_argument("--workers", type=int, default=0, metavar="N",
                       help="processes hashing and analysing rows (default 0: 2 for large traces when "
                       "a core is free, else 1)")


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
    return DiffOptions(
        tier=args.tier,
        atol=args.atol,
        near_tie_factor=args.near_tie_factor,
        noise_floor=args.noise_floor,
        context_tokens=args.context,
        continuation_tokens=args.continuation,
        allow_incomplete=args.allow_incomplete,
        workers=args.workers,
    )


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

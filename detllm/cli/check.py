"""Run a model repeatedly and at several batch sizes, and say whether it repeats.

Loads the model once, runs the prompts --runs times at the first --batch-size with
prompts in order, then at every other batch size, and at every batch size above 1
also in other compositions (--compositions), so that each prompt meets other
neighbours. Every run is compared with run 0 by the diff engine, to answer: Tier 1
repeatable (same tokens)? Tier 2 repeatable (same logprobs too)? Batch invariant?
Writes a check directory: env.json, run_config.json, determinism_applied.json,
traces/ (one trace per run), report.json, report.txt, report.md, report.html
and diffs/first_divergence.json; with --replay also replays/, the replay traces that
measure each divergence's margin under both setups. Exit status: 0 when every question holds at --tier,
1 when one does not, 2 when the check could not be done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._escape import text as escape
from ..errors import UsageError
from ..capture.check import check as run_check
from ..capture.check import parse_batch_sizes
from ..capture.runner import COMPOSITIONS
from ..diff.options import CHECK_FIELDS, add_comparison_flags
from ._sweep_options import add_sweep_arguments
from ..report import DEFAULT_MAX_PROMPTS
from ._capture_options import (
    add_model_arguments,
    add_recording_arguments,
    config_from,
    default_out,
    prompts_from,
)
from ._progress import Progress
from ._report_options import HTML_HELP, print_report
from ._server_options import add_server_arguments, with_server_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    check = parser.add_argument_group("check")
    check.add_argument("--runs", type=int, default=2, metavar="N", help="repeats at the first batch size (default: %(default)s)")
    check.add_argument("--batch-size", default="1,8", metavar="B1,B2,...", help="batch sizes: the repeats run at the first, the others are swept (default: %(default)s)")
    check.add_argument("--compositions", metavar="HOW,...", help=f"compositions run besides in-order at batch sizes above 1 ({', '.join(c for c in COMPOSITIONS if c != 'in-order')}, or none; default: reversed and a shuffle that changes most prompts' batch-mates)")
    check.add_argument("--isolate", action="store_true", help="run each repeat in a fresh process (detllm run), which catches what one process hides")
    add_sweep_arguments(check)
    check.add_argument("--replay", action="store_true", help="replay both sides of every divergence under both setups (teacher forcing; against a server, at each setup's requests in flight): the report measures the margin at each, against the replay's noise floor; traces in replays/")
    add_recording_arguments(check)
    check.add_argument("--out", metavar="DIR", help="check directory to create (default: checks/<UTC time>)")

    add_comparison_flags(parser.add_argument_group("comparison"), CHECK_FIELDS, help={
        "tier": "1: judge tokens (default); 2: also logprobs, for repeats and batch sizes alike",
        "atol": "logprobs within X count as equal (default 0: bitwise)",
    })

    output = parser.add_argument_group("output")
    formats = output.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print the versioned JSON report")
    formats.add_argument("--markdown", action="store_true", help="print Markdown, ready for a GitHub issue")
    formats.add_argument("--html", action="store_true", help=HTML_HELP)
    output.add_argument("--max-prompts", type=int, default=DEFAULT_MAX_PROMPTS, metavar="N", help="prompts printed in full (default %(default)s; the files have every prompt)")
    add_server_arguments(parser, check=True)
    output.add_argument("-q", "--quiet", action="store_true", help="print nothing, no progress either; the exit status tells")


def run(args: argparse.Namespace) -> int:
    sizes = parse_batch_sizes(args.batch_size)
    config = with_server_options(config_from(args, batch_size=sizes[0], composition="in-order"), args)
    prompts = prompts_from(args)
    compositions = None
    if args.compositions is not None:
        compositions = [c.strip() for c in args.compositions.split(",") if c.strip() not in ("", "none")]
    out = Path(args.out) if args.out else default_out("checks")
    progress = Progress("detllm check", enabled=not args.quiet)
    try:
        if config.backend == "openai":
            if args.sweep:
                raise UsageError("--sweep needs an in-process backend (hf or vllm): a server's engine settings are fixed when it starts; "
                                 "check each server setup and compare them with detllm diff")
            from ..capture.concurrency import ServerCheck, parse_levels, server_check

            asked = ServerCheck(runs=args.runs, levels=tuple(parse_levels(args.concurrency)), tier=args.tier,
                                atol=args.atol, prefix_cache_probe=args.prefix_cache_probe, replay=args.replay)
            result = server_check(config, prompts, asked, out=out, argv=args.command_line, progress=progress)
        else:
            result = run_check(
                config,
                prompts,
                runs=args.runs,
                batch_sizes=sizes,
                compositions=compositions,
                isolate=args.isolate,
                tier=args.tier,
                atol=args.atol,
                out=out,
                argv=args.command_line,
                progress=progress,
                sweep=args.sweep,
                sweep_mode=args.sweep_mode,
                replay=args.replay,
            )
    finally:
        progress.close()
    report = result.report
    if not args.quiet:
        for name, reason in report.determinism.missing.items():
            print(escape(f"detllm: warning: determinism control {name} not applied: {reason}"), file=sys.stderr)
        print_report(report, args, command=args.command_line)
        print(f"detllm: check directory {escape(str(result.directory))}", file=sys.stderr)
    return result.exit_code

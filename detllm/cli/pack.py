"""Cut a check directory down to a minimal repro pack: the prompts that diverge.

Writes PACK_DIR: every trace with the diverging prompts' rows only (re-written, so
they validate), prompts.jsonl, env.json, run_config.json,
determinism_applied.json, the report computed again on those traces
(report.json, report.txt, report.md, report.html, diffs/first_divergence.json),
and a README.md with the command that runs the same check on the same prompts
and how to compare. A prompt diverges when some run differs from run 0 at the check's
tier (or --tier). A run directory holds one trace: pack it with --all. Exit
status: 0 when the pack was written, 2 when nothing diverges or the input cannot
be used.
"""

from __future__ import annotations

import argparse

from .._escape import text as escape
from ..errors import TraceFormatError
from ..diff.options import add_comparison_flags
from ..report import make_pack
from ._report_options import as_trouble


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="CHECK_DIR", help="a check directory (detllm check), or a run directory with --all")
    parser.add_argument("--out", required=True, metavar="PACK_DIR", help="the pack to create (must not exist, or be empty)")
    parser.add_argument("--all", action="store_true", dest="all_prompts", help="keep every prompt, diverging or not")
    add_comparison_flags(parser, ("tier", "allow_incomplete"), defaults={"tier": None}, help={
        "tier": "1: prompts whose tokens diverge; 2: also those whose logprobs differ (default: the check's tier)",
        "allow_incomplete": "pack a check that did not finish, from the complete rows of the traces it wrote",
    })
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    try:
        result = make_pack(args.source, args.out, all_prompts=args.all_prompts, tier=args.tier,
                           allow_incomplete=args.allow_incomplete)
    except TraceFormatError as error:
        raise as_trouble(error) from None
    if not args.quiet:
        where = escape(str(result.directory))
        if result.incomplete:
            print(f"{where}: {escape(result.incomplete)}")
        print(f"{where}: {len(result.prompts)} of {result.total} prompts; reproduce with (in {where}):")
        print("  " + escape(" ".join(result.command)))
    return 0

"""Run a model on prompts and record what it generated.

Writes a run directory: env.json (the environment), run_config.json (these
settings and the prompts), determinism_applied.json (the determinism controls
applied and those that could not be) and trace.jsonl (the trace). Without
--prompt or --prompt-file a built-in set of prompts is used. Exit status: 0 when
the trace was written, 2 when the run could not be done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._escape import text as escape
from ..capture.runner import COMPOSITIONS
from ..capture.runner import run as run_capture
from ._capture_options import (
    DEFAULTS,
    add_model_arguments,
    add_recording_arguments,
    config_from,
    default_out,
    prompts_from,
)
from ._server_options import add_server_arguments, with_server_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    capture = parser.add_argument_group("capture")
    capture.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="prompts per batch (default: %(default)s)")
    capture.add_argument("--composition", default=DEFAULTS.composition, metavar="HOW", help=f"how prompts are grouped into batches: {', '.join(COMPOSITIONS)} (default: %(default)s)")
    add_recording_arguments(capture)
    capture.add_argument("--out", metavar="DIR", help="run directory to create (default: runs/<UTC time>)")
    add_server_arguments(parser, check=False)


def run(args: argparse.Namespace) -> int:
    config = with_server_options(config_from(args, batch_size=args.batch_size, composition=args.composition), args)
    prompts = prompts_from(args)
    out = Path(args.out) if args.out else default_out("runs")
    if config.backend == "openai":
        from ..capture.concurrency import server_run

        result = server_run(config, prompts, concurrency=args.concurrency, out=out, argv=args.command_line)
    else:
        result = run_capture(config, prompts, out=out, argv=args.command_line)
    for name, reason in result.determinism.missing().items():
        print(escape(f"detllm: warning: determinism control {name} not applied: {reason}"), file=sys.stderr)
    tokens = sum(len(row.token_ids) for row in result.rows)
    header = result.header
    print(escape(
        f"{result.directory}: {len(result.rows)} prompts, {tokens} tokens; model {header.model.id} "
        f"({header.model.fingerprint or 'no fingerprint'}), {header.device}, {header.dtype}, "
        + (f"{header.backend_settings.get('concurrency')} in flight" if config.backend == "openai" else f"batch size {header.batch.size}")
        + f"; determinism {result.determinism.mode}"
        + ("" if result.determinism.complete else " (incomplete: see determinism_applied.json)")
    ))
    return 0

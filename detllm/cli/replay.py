"""Replay a trace's tokens under a setup (teacher forcing) and record what it computes for them.

For every row of TRACE (a trace file or run directory), its input ids and generated
ids are fed to the model as one forced sequence; at every generated position the
replay records the recorded token's logprob and rank under this setup and this
setup's top-k. --out names the replay: a .jsonl or .jsonl.gz file, or a directory
to create (trace.jsonl, env.json, run_config.json, determinism_applied.json). The
replay is a trace (format 1.1) whose header names TRACE by its footer digest;
compare it with `detllm diff TRACE REPLAY`. The hf backend runs one forward pass
per batch of --batch-size rows; vllm and openai ask for prompt_logprobs (vLLM).
Exit status: 0 when the replay was written, 2 when it could not be done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from .._escape import text as escape
from ..capture.replay import replay
from ._capture_options import DEFAULTS, add_model_arguments, add_recording_arguments, config_from, default_out
from ._server_options import add_server_arguments, with_server_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", metavar="TRACE", help="the trace to replay: a trace file, or a run directory holding one")
    add_model_arguments(parser, generation=False)
    capture = parser.add_argument_group("replay")
    capture.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="rows per forward pass, in file order (default: %(default)s)")
    add_recording_arguments(capture, replay=True)
    capture.add_argument("--out", metavar="DIR_OR_FILE", help="replay directory to create, or a .jsonl/.jsonl.gz file (default: replays/<UTC time>)")
    add_server_arguments(parser, check=False)


def run(args: argparse.Namespace) -> int:
    config = with_server_options(config_from(args, batch_size=args.batch_size, composition="in-order"), args)
    if config.backend == "openai" and args.concurrency != 1:
        config = msgspec.structs.replace(config, options={**config.options, "concurrency": args.concurrency})
    out = Path(args.out) if args.out else default_out("replays")
    result = replay(args.trace, config, out=out, top_k=args.top_logprobs, argv=args.command_line)
    header = result.header
    print(escape(
        f"{result.path}: replay of {result.source.path} ({result.rows} rows, {result.tokens} forced tokens); "
        f"model {header.model.id}, {header.device}, {header.dtype}, batch size {header.batch.size}; "
        f"compare: detllm diff {result.source.path} {result.path}"
    ))
    return 0

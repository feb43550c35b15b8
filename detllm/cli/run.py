"""Run a model on prompts and record what it generated.

Writes a run directory: env.json (the environment), run_config.json (these
settings and the prompts), determinism_applied.json (the determinism controls
applied and those that could not be) and trace.jsonl (the trace). Without
--prompt or --prompt-file a built-in set of prompts is used. Exit status: 0 when
the trace was written, 2 when the run could not be done.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from ..capture.determinism import MODES
from ..capture.env import REDACTIONS, parse_redactions
from ..capture.models import BUILTIN_MODELS
from ..capture.prompts import load_prompt_file, prompts_from_texts
from ..capture.registry import BACKENDS
from ..capture.runner import COMPOSITIONS, RunConfig, as_prompts, run as run_capture
from ..errors import UsageError

DEFAULTS = RunConfig(model="")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help=f"a model directory, a built-in model ({', '.join(BUILTIN_MODELS)}), or a hub id already in the local cache")
    model.add_argument("--tokenizer", help="tokenizer directory or id (default: the model's)")
    model.add_argument("--revision", help="hub revision of a cached model")
    model.add_argument("--backend", default=DEFAULTS.backend, choices=list(BACKENDS), help="inference backend (default: %(default)s)")
    model.add_argument("--dtype", default=DEFAULTS.dtype, help="float32, bfloat16 or float16 (default: %(default)s)")
    model.add_argument("--device", default=DEFAULTS.device, help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    model.add_argument(
        "--backend-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend setting, recorded in the trace header (hf: attn_implementation=eager|sdpa, eos_token_ids=[0]); VALUE is read as JSON when it parses",
    )

    prompts = parser.add_argument_group("prompts")
    prompts.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable); ids p1, p2, ...")
    prompts.add_argument("--prompt-file", help="text (one prompt per line) or JSON Lines (.jsonl: id, prompt or input_ids)")

    decoding = parser.add_argument_group("decoding")
    decoding.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens, help="default: %(default)s")
    decoding.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    decoding.add_argument("--temperature", type=float, default=DEFAULTS.temperature, help="sampling only (default: %(default)s)")
    decoding.add_argument("--top-p", type=float, default=DEFAULTS.top_p, help="sampling only (default: %(default)s)")
    decoding.add_argument("--top-k", type=int, default=DEFAULTS.top_k, help="sampling only; 0 turns it off (default: %(default)s)")
    decoding.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds the random generators and sampling (default: %(default)s)")

    capture = parser.add_argument_group("capture")
    capture.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="prompts per batch (default: %(default)s)")
    capture.add_argument("--composition", default=DEFAULTS.composition, metavar="HOW", help=f"how prompts are grouped into batches: {', '.join(COMPOSITIONS)} (default: %(default)s)")
    capture.add_argument("--top-logprobs", type=int, default=DEFAULTS.top_logprobs, metavar="K", help="alternatives recorded per step (default: %(default)s)")
    capture.add_argument("--logprobs", default=DEFAULTS.logprobs, choices=["raw", "processed"], help="raw: the model's log-softmax; processed: after temperature, top-k, top-p (default: %(default)s)")
    capture.add_argument("--mode", default=DEFAULTS.mode, choices=list(MODES), help="determinism controls: strict refuses to run without all of them (default: %(default)s)")
    capture.add_argument("--threads", type=int, help="torch CPU threads (default: leave as is, and record it)")
    capture.add_argument("--redact", default="", metavar="WHAT", help=f"facts left out of env.json: {', '.join(REDACTIONS)}, or all")
    capture.add_argument("--out", metavar="DIR", help="run directory to create (default: runs/<UTC time>)")


def run(args: argparse.Namespace) -> int:
    config = RunConfig(
        model=args.model,
        backend=args.backend,
        tokenizer=args.tokenizer,
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        mode=args.mode,
        seed=args.seed,
        threads=args.threads,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        batch_size=args.batch_size,
        composition=args.composition,
        top_logprobs=args.top_logprobs,
        logprobs=args.logprobs,
        options=_options(args.backend_option),
        redact=list(parse_redactions(args.redact)),
    )
    if args.prompt and args.prompt_file:
        raise UsageError("give prompts with --prompt or --prompt-file, not both")
    if args.prompt_file:
        prompts = load_prompt_file(args.prompt_file)
    elif args.prompt:
        prompts = prompts_from_texts(args.prompt)
    else:
        prompts = as_prompts(None)
    out = Path(args.out) if args.out else _default_out()
    result = run_capture(config, prompts, out=out, argv=args.command_line)
    for name, reason in result.determinism.missing().items():
        print(f"detllm: warning: determinism control {name} not applied: {reason}", file=sys.stderr)
    tokens = sum(len(row.token_ids) for row in result.rows)
    header = result.header
    print(
        f"{result.directory}: {len(result.rows)} prompts, {tokens} tokens; model {header.model.id} "
        f"({header.model.fingerprint or 'no fingerprint'}), {header.device}, {header.dtype}, "
        f"batch size {header.batch.size}; determinism {result.determinism.mode}"
        + ("" if result.determinism.complete else " (incomplete: see determinism_applied.json)")
    )
    return 0


def _options(items: list[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--backend-option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def _default_out() -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stamp}-{n}"
    return path

"""Options shared by ``run``, ``check`` and ``replay``: the model, the prompts, decoding, capture."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from ..capture.backend import Prompt
from ..capture.determinism import MODES
from ..capture.env import REDACTIONS, parse_redactions
from ..capture.models import BUILTIN_MODELS
from ..capture.prompts import load_prompt_file, prompts_from_texts
from ..capture.registry import BACKENDS
from ..capture.runner import RunConfig, as_prompts
from ..errors import UsageError

DEFAULTS = RunConfig(model="")


def add_model_arguments(parser: argparse.ArgumentParser, *, generation: bool = True) -> None:
    """The model, and (``generation``) the prompts and decoding settings; ``replay`` takes
    its prompts and tokens from a trace, so it has the model group and ``--seed`` only."""
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
        help="a backend setting, recorded in the trace header (hf: attn_implementation=eager|sdpa, eos_token_ids=[0]; "
        "vllm: see docs/vllm.md); VALUE is read as JSON when it parses",
    )

    if not generation:
        model.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds the random generators (default: %(default)s)")
        parser.set_defaults(
            prompt=[], prompt_file=None, max_new_tokens=DEFAULTS.max_new_tokens, do_sample=False,
            temperature=DEFAULTS.temperature, top_p=DEFAULTS.top_p, top_k=DEFAULTS.top_k,
        )  # fmt: skip
        return
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


def add_recording_arguments(group: argparse._ArgumentGroup, *, replay: bool = False) -> None:
    """``replay``: logprobs are raw (forced), and K defaults to the source trace's."""
    if replay:
        group.add_argument("--top-logprobs", type=int, default=None, metavar="K", help="alternatives recorded per position (default: the source trace's, or 5 when it has none)")
        group.set_defaults(logprobs="raw")
    else:
        group.add_argument("--top-logprobs", type=int, default=DEFAULTS.top_logprobs, metavar="K", help="alternatives recorded per step (default: %(default)s)")
        group.add_argument("--logprobs", default=DEFAULTS.logprobs, choices=["raw", "processed"], help="raw: the model's log-softmax; processed: after temperature, top-k, top-p (default: %(default)s)")
    group.add_argument("--mode", default=DEFAULTS.mode, choices=list(MODES), help="determinism controls: strict refuses to run without all of them (default: %(default)s)")
    group.add_argument("--threads", type=int, help="torch CPU threads (default: leave as is, and record it)")
    group.add_argument("--redact", default="", metavar="WHAT", help=f"facts left out of env.json: {', '.join(REDACTIONS)}, or all")


def config_from(args: argparse.Namespace, *, batch_size: int, composition: str) -> RunConfig:
    return RunConfig(
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
        batch_size=batch_size,
        composition=composition,
        top_logprobs=DEFAULTS.top_logprobs if args.top_logprobs is None else args.top_logprobs,
        logprobs=args.logprobs,
        options=_options(args.backend_option),
        redact=list(parse_redactions(args.redact)),
    )


def prompts_from(args: argparse.Namespace) -> list[Prompt]:
    if args.prompt and args.prompt_file:
        raise UsageError("give prompts with --prompt or --prompt-file, not both")
    if args.prompt_file:
        return load_prompt_file(args.prompt_file)
    if args.prompt:
        return prompts_from_texts(args.prompt)
    return as_prompts(None)


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


def default_out(parent: str) -> Path:
    """``<parent>/<UTC time>``, with ``-2``, ``-3``, ... when taken."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(parent) / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path(parent) / f"{stamp}-{n}"
    return path

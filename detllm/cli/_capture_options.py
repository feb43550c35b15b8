"""Options shared by ``run``, ``check`` and ``replay``: the model, the prompts, decoding, capture."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path

from .._flags import add_flags, values_from
from ..capture.backend import Prompt
from ..capture.determinism import MODES
from ..capture.env import REDACTIONS, parse_redactions
from ..capture.models import BUILTIN_MODELS
from ..capture.prompts import load_prompt_file, prompts_from_texts
from ..capture.registry import BACKENDS
from ..capture.runner import RunConfig, as_prompts
from ..errors import UsageError
from ..rundir import RUN_FLAGS

DEFAULTS = RunConfig(model="")
_DEFAULTS = {name: getattr(DEFAULTS, name) for name in RunConfig.__struct_fields__}


def _add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, group: str, *, skip: tuple[str, ...] = (),
         help: dict[str, str] | None = None, defaults: dict[str, object] | None = None) -> None:
    """The table's flags of one help ``group`` (:data:`~detllm.rundir.RUN_FLAGS`), with the
    capture layer's lists filled in."""
    flags = []
    for flag in RUN_FLAGS:
        if flag.group == group and flag.field not in skip:
            words = flag.help.format(models=", ".join(BUILTIN_MODELS), redactions=", ".join(REDACTIONS))
            flags.append(dataclasses.replace(flag, help=words))
    add_flags(parser, flags, _DEFAULTS, help=help, defaults=defaults,
              choices={"backend": list(BACKENDS), "mode": list(MODES)})


def add_model_arguments(parser: argparse.ArgumentParser, *, generation: bool = True) -> None:
    """The model, and (``generation``) the prompts and decoding settings; ``replay`` takes
    its prompts and tokens from a trace, so it has the model group and ``--seed`` only."""
    model = parser.add_argument_group("model")
    _add(model, "model", defaults={"dtype": None})  # None: not given (a server's is then unknown)
    if not generation:
        seed = next(f for f in RUN_FLAGS if f.field == "seed")
        add_flags(model, [seed], _DEFAULTS, help={"seed": "seeds the random generators (default: %(default)s)"})
        parser.set_defaults(**{f.field: _DEFAULTS[f.field] for f in RUN_FLAGS if f.group == "decoding" and f.field != "seed"})
        parser.set_defaults(prompt=[], prompt_file=None)
        return
    prompts = parser.add_argument_group("prompts")
    prompts.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable); ids p1, p2, ...")
    prompts.add_argument("--prompt-file", help="text (one prompt per line) or JSON Lines (.jsonl: id, prompt or input_ids)")
    _add(parser.add_argument_group("decoding"), "decoding")


def add_recording_arguments(group: argparse._ArgumentGroup, *, replay: bool = False) -> None:
    """``replay``: logprobs are raw (forced), and K defaults to the source trace's."""
    if replay:
        _add(group, "recording", skip=("logprobs",), defaults={"top_logprobs": None}, help={
            "top_logprobs": "alternatives recorded per position (default: the source trace's, or 5 when it has none)",
        })
        group.set_defaults(logprobs="raw")
    else:
        _add(group, "recording")


def config_from(args: argparse.Namespace, *, batch_size: int, composition: str) -> RunConfig:
    values = values_from(args, RUN_FLAGS)
    values["redact"] = list(parse_redactions(",".join(values["redact"])))
    return RunConfig(**values, batch_size=batch_size, composition=composition)


def prompts_from(args: argparse.Namespace) -> list[Prompt]:
    if args.prompt and args.prompt_file:
        raise UsageError("give prompts with --prompt or --prompt-file, not both")
    if args.prompt_file:
        return load_prompt_file(args.prompt_file)
    if args.prompt:
        return prompts_from_texts(args.prompt)
    return as_prompts(None)


def default_out(parent: str) -> Path:
    """``<parent>/<UTC time>``, with ``-2``, ``-3``, ... when taken."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(parent) / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path(parent) / f"{stamp}-{n}"
    return path

"""The prefix-cache probe of a sweep, run as ``python -m detllm.capture._prefix_probe``.

``python -m detllm.capture._prefix_probe SCRATCH COLD WARM``: starts one engine from
``SCRATCH/config.json`` (a :class:`~detllm.capture.runner.RunConfig` with prefix caching on
and the per-batch cache reset off), runs the prompts of ``SCRATCH/prompts.jsonl`` once into
the trace ``COLD`` (the engine is new, its cache empty) and once more into ``WARM`` (the
cache now holds every prompt), and writes vLLM's count of cached prompt tokens of each
pass to ``SCRATCH/prefix_cache.json``. Errors end it as ``detllm`` commands end: one
line on stderr, exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from ..errors import CaptureError, DetllmError
from ..diff.model import PrefixCounters
from .prompts import load_prompt_file
from ..rundir import DETERMINISM_FILE, write_document, write_file
from .runner import CaptureSession, RunConfig


def probe(scratch: Path, cold: Path, warm: Path) -> PrefixCounters:
    config = msgspec.json.decode((scratch / "config.json").read_bytes(), type=RunConfig)
    prompts = load_prompt_file(scratch / "prompts.jsonl")
    counts: list[dict[str, int | None]] = []
    with CaptureSession.of(config) as session:
        write_document(scratch / DETERMINISM_FILE, session.determinism.to_dict())
        cached = getattr(session.backend, "cached_tokens", None)
        if cached is None:
            raise CaptureError(f"the {config.backend} backend reports no prefix-cache counters")
        for path in (cold, warm):
            cached.clear()
            session.capture(
                prompts,
                config.decoding(),
                batch_size=config.batch_size,
                composition=config.composition,
                top_logprobs=config.top_logprobs,
                logprobs=config.logprobs,
                path=path,
                keep_rows=False,
            )
            counts.append(dict(cached))
        block_size = session.backend.describe().settings.get("block_size")
    counters = PrefixCounters(cold=counts[0], warm=counts[1], block_size=block_size if isinstance(block_size, int) else None)
    write_file(scratch / "prefix_cache.json", msgspec.json.encode(counters))
    return counters


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m detllm.capture._prefix_probe SCRATCH COLD WARM", file=sys.stderr)
        return 2
    try:
        probe(Path(argv[0]), Path(argv[1]), Path(argv[2]))
    except DetllmError as error:
        print(f"detllm: {error}", file=sys.stderr)
        return int(error.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

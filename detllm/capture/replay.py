"""Teacher-forced replay: a trace's tokens fed to a setup, and what the setup computes for them.

For every row of the source trace, its input ids and generated ids go to the backend as
one forced sequence; at every generated position the replay records the recorded
token's logprob and rank under this setup, and this setup's own top-k. The result is a
trace (version 1.1) whose header names the source by its footer digest
(``Header.replay``): ``detllm diff SOURCE REPLAY`` then measures, at every position,
how far the two setups' numbers for the very same tokens lie apart. See docs/replay.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..rundir import write_document, write_file
from .._claim import DirectoryClaim
from ..diff.inputs import locate_trace
from ..errors import CaptureError, UsageError
from ..reader import open_trace
from ..trace import REPLAY_VERSION, Batch, Footer, Header, Placement, Replay, Row
from ..writer import TraceWriter
from .backend import ForcedSequence, ForcedStep
from .concurrency import _redacted, _redacted_argv, _session
from .runner import (
    DETERMINISM_FILE,
    ENV_FILE,
    RUN_CONFIG_FILE,
    TRACE_FILE,
    CaptureSession,
    RunConfig,
)

TRACE_SUFFIXES = (".jsonl", ".jsonl.gz")
"""An ``out`` ending in one of these is the replay trace itself; anything else is a directory."""

DEFAULT_TOP_K = 5
"""Alternatives per position when the source recorded none."""

REPLAY_METHODS: dict[str, dict[str, Any]] = {
    "hf": {
        "method": "one forward pass per batch of forced sequences, left padding and attention mask, no KV cache",
        "prefix_cache": "not used",
        "rank": "exact over the whole vocabulary: 1 + tokens of larger logprob, or of equal logprob and lower id (argmax order)",
    },
    "vllm": {
        "method": "prompt_logprobs=K, the forced sequence given as token ids, max_tokens=1",
        "prefix_cache": "bypassed: vLLM skips the prefix cache for requests with prompt_logprobs (vLLM PR 17251)",
        "rank": "vLLM's rank of the prompt token",
    },
    "openai": {
        "method": "POST /v1/completions, prompt = token ids, prompt_logprobs=K, max_tokens=1, return_tokens_as_token_ids",
        "prefix_cache": "the server's; vLLM skips its prefix cache for requests with prompt_logprobs (vLLM PR 17251)",
        "rank": "the server's rank of the prompt token",
    },
}
"""What each backend's replay does, recorded in the header's ``backend_settings.replay``."""


@dataclass(frozen=True)
class ReplaySource:
    """The source trace: where it is, its header and its footer."""

    path: Path
    header: Header
    footer: Footer


@dataclass(frozen=True)
class ReplayResult:
    """What :func:`replay` did: the replay trace's header, its path and its row count."""

    header: Header
    path: Path
    rows: int
    tokens: int
    source: ReplaySource
    directory: Path | None
    """The replay directory, or None when ``out`` named the trace file itself."""


def read_source(path: str | os.PathLike[str]) -> ReplaySource:
    """Open the source trace (a file or run directory), checking it whole, digest included.

    A replay names its source by the footer digest, so the source must be complete.
    """
    located = Path(locate_trace(path))
    with open_trace(located) as reader:
        for _ in reader.raw_rows():
            pass
        assert reader.footer is not None  # a trace without its footer raised
        return ReplaySource(located, reader.header, reader.footer)


def replay(
    source: str | os.PathLike[str],
    config: RunConfig,
    *,
    out: str | os.PathLike[str],
    top_k: int | None = None,
    argv: Sequence[str] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``source`` under ``config``'s setup (model, backend, dtype, device, batch size).

    ``out``: a ``.jsonl``/``.jsonl.gz`` file to write the replay trace to, or a directory
    to create (``trace.jsonl`` with ``env.json``, ``run_config.json`` and
    ``determinism_applied.json``, as ``detllm run`` writes). ``top_k``: alternatives per
    position (default: the source's, or 5 when it recorded none). The decoding settings
    of ``config`` play no part: nothing is decoded.
    """
    if config.batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {config.batch_size}")
    src = read_source(source)
    k = top_k if top_k is not None else (src.header.logprobs.top_k or DEFAULT_TOP_K)
    if k < 0:
        raise UsageError(f"--top-logprobs must be >= 0, got {k}")
    config = msgspec.structs.replace(config, logprobs="raw", top_logprobs=k)
    target = Path(out)
    to_file = target.name.endswith(TRACE_SUFFIXES)
    if to_file and (target.exists() or target.with_name(target.name + ".partial").exists()):
        raise UsageError(f"{target}: exists; choose another --out or remove it")
    claim: AbstractContextManager[object] = nullcontext() if to_file else DirectoryClaim(target)
    trace_path = target if to_file else target / TRACE_FILE
    with claim, _session(config) as session:
        if not hasattr(session.backend, "score"):
            raise CaptureError(f"the {config.backend} backend cannot replay (it has no forced scoring)")
        if not to_file:
            write_document(target / RUN_CONFIG_FILE, _config_document(_redacted(config), src, _redacted_argv(config, argv)))
            write_file(target / ENV_FILE, session.environment.to_json())
            write_document(target / DETERMINISM_FILE, session.determinism.to_dict())
        session.controls.reseed()
        header = _header(session, src, config)
        rows = tokens = 0
        with TraceWriter(trace_path, header) as writer:
            for row in _replayed(session, src, config.batch_size, k, on_batch):
                writer.write(row)
                rows += 1
                tokens += len(row.token_ids)
    return ReplayResult(header, trace_path, rows, tokens, src, None if to_file else target)


def _header(session: CaptureSession, src: ReplaySource, config: RunConfig) -> Header:
    header = session._header(
        src.header.decoding,  # nothing is decoded: the source's settings say what made the tokens
        Batch(size=config.batch_size, composition="in-order"),
        config.top_logprobs,
        "raw",
        {"replay_of": src.path.name},
    )
    settings = dict(header.backend_settings)
    settings["replay"] = REPLAY_METHODS.get(config.backend, {"method": "the backend's forced scoring"})
    return msgspec.structs.replace(
        header,
        version=REPLAY_VERSION,
        backend_settings=settings,
        replay=Replay(source_digest=src.footer.digest, source_rows=src.footer.rows, source_name=src.path.name),
    )


def _replayed(
    session: CaptureSession,
    src: ReplaySource,
    batch_size: int,
    top_k: int,
    on_batch: Callable[[int, int], None] | None,
) -> Iterator[Row]:
    """The source's rows, ``batch_size`` at a time in file order, each with the replay's numbers."""
    backend: Any = session.backend
    batches = -(-src.footer.rows // batch_size)
    texts_of = getattr(backend, "token_texts", None)
    with open_trace(src.path) as reader:
        group: list[Row] = []
        index = 0
        for row in reader:
            group.append(row)
            if len(group) == batch_size:
                yield from _replay_batch(backend, group, index, top_k, texts_of)
                index += 1
                group = []
                if on_batch is not None:
                    on_batch(index, batches)
        if group:
            yield from _replay_batch(backend, group, index, top_k, texts_of)
            if on_batch is not None:
                on_batch(index + 1, batches)


def _replay_batch(
    backend: Any, group: list[Row], index: int, top_k: int, texts_of: Callable[[list[int]], dict[int, str]] | None
) -> Iterator[Row]:
    forced = [
        ForcedSequence(prompt_id=r.prompt_id, input_ids=tuple(r.input_token_ids), forced_ids=tuple(r.token_ids))
        for r in group
    ]
    scored: list[list[ForcedStep]] = backend.score(forced, top_k=top_k)
    if len(scored) != len(group):
        raise CaptureError(f"the backend scored {len(scored)} sequences of a batch of {len(group)}")
    for position, (row, steps) in enumerate(zip(group, scored)):
        if len(steps) != len(row.token_ids):
            raise CaptureError(
                f"replay of {row.prompt_id!r}: the backend scored {len(steps)} of {len(row.token_ids)} forced tokens"
            )
        top = [list(zip(s.top_ids, s.top_logprobs)) for s in steps]
        texts = dict(row.token_texts or {})
        new = [t for step in top for t, _ in step if t not in texts]
        if new and texts_of is not None:
            texts.update(texts_of(new))
        yield Row(
            prompt_id=row.prompt_id,
            input_token_ids=row.input_token_ids,
            token_ids=row.token_ids,
            logprobs=[s.logprob for s in steps],
            top_logprobs=top,
            finish_reason=row.finish_reason,
            token_texts=texts or None,
            prompt=row.prompt,
            batch=Placement(index=index, position=position, size=len(group)),
            ranks=[s.rank for s in steps],
        )


def _config_document(config: RunConfig, src: ReplaySource, argv: Sequence[str] | None) -> dict[str, Any]:
    """``run_config.json`` of a replay directory: the settings, the source, the command."""
    return {
        "format": "detllm.run_config",
        "version": "1.0",
        "command": list(argv) if argv is not None else None,
        "config": msgspec.to_builtins(config),
        "replay_of": {"path": str(src.path), "digest": src.footer.digest, "rows": src.footer.rows},
    }

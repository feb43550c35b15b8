"""Building the replay report: read a trace and a replay of it, check that it is one, compare."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from .._version import __version__
from ._locate import locate_trace
from ._model import Producer
from ._replay import compare_replay_rows, setup_differences
from ._report import REPORT_FORMAT, REPORT_VERSION
from ..errors import InputError, NewerMinorVersionWarning
from ..reader import TraceReader, open_trace
from ..trace import Header, Row
from ._replay_model import ReplayDocument, ReplayPrompt, ReplaySetupDifference, ReplaySide, ReplayVerdict


class NotAReplay(Exception):
    """The second trace is not a replay of the first; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def replay_relation(original: str | os.PathLike[str], replay: str | os.PathLike[str]) -> str | None:
    """None when ``replay`` is a replay of ``original`` (its header names the original's
    footer digest); otherwise why not, in one line. Only headers and the original's
    footer are read (the original's digest is verified on the way)."""
    original_path, replay_path = locate_trace(original), locate_trace(replay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NewerMinorVersionWarning)
        with open_trace(replay_path, verify_digest=False) as reader:
            named = reader.header.replay
        if named is None:
            return f"{replay_path} is not a replay (its header has no replay member)"
        with open_trace(original_path) as reader:
            for _ in reader.raw_rows():
                pass
            footer = reader.footer
    assert footer is not None
    if footer.digest != named.source_digest:
        return (
            f"{replay_path} is a replay of a trace with digest {named.source_digest}, not of {original_path} "
            f"(digest {footer.digest})"
        )
    return None


def build_replay_report(original: str | os.PathLike[str], replay: str | os.PathLike[str]) -> ReplayDocument:
    """Compare a trace with a replay of it, at every position.

    Raises :class:`NotAReplay` when the replay's header does not name the original's
    digest, :class:`~detllm.errors.InputError` when rows do not pair (other prompt ids
    or tokens), and the reader's format errors.
    """
    reason = replay_relation(original, replay)
    if reason is not None:
        raise NotAReplay(reason)
    original_path, replay_path = locate_trace(original), locate_trace(replay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NewerMinorVersionWarning)
        left = open_trace(original_path, verify_digest=False)
        try:
            right = open_trace(replay_path)
        except BaseException:
            left.close()
            raise
    with left, right:
        summary, prompts = compare_replay_rows(_pairs(left, right))
        left_side, right_side = _side(left), _side(right)
        differences = setup_differences(left.header, right.header)
        notes = _notes(left.header, right.header)
    baseline = not differences
    all_rank_1 = summary.would_flip == 0
    return ReplayDocument(
        format=REPORT_FORMAT,  # type: ignore[arg-type]
        version=REPORT_VERSION,
        kind="replay",
        producer=Producer(name="detllm", version=__version__),
        original=left_side,
        replay=right_side,
        setup=[ReplaySetupDifference(field=d.field, original=d.original, replay=d.replay) for d in differences],
        verdict=ReplayVerdict(baseline=baseline, all_rank_1=all_rank_1, text=_verdict_text(baseline, summary.would_flip, summary.positions)),
        summary=summary,
        notes=notes,
        prompts=[ReplayPrompt(prompt_id=p.prompt_id, statistics=p.statistics, flips=p.flips) for p in prompts],
    )


def _pairs(left: TraceReader, right: TraceReader) -> Iterator[tuple[Row, Row]]:
    """Rows in step: a replay keeps its source's rows, in order."""
    rights = iter(right)
    for a in left:
        b = next(rights, None)
        if b is None:
            raise InputError(f"{right.path}: ends before the row of prompt {a.prompt_id!r}: not a whole replay of {left.path}")
        if b.prompt_id != a.prompt_id:
            raise InputError(f"{right.path}:{right.rows_read + 1}: prompt_id: {b.prompt_id!r} where the original has {a.prompt_id!r}")
        if b.token_ids != a.token_ids or b.input_token_ids != a.input_token_ids:
            raise InputError(f"{right.path}:{right.rows_read + 1}: token_ids: prompt {a.prompt_id!r} has other tokens than in the original")
        yield a, b
    extra = next(rights, None)
    if extra is not None:
        raise InputError(f"{right.path}: has more rows than {left.path} (prompt {extra.prompt_id!r})")


def _side(reader: TraceReader) -> ReplaySide:
    h = reader.header
    return ReplaySide(
        path=str(Path(reader.path)),
        digest=reader.footer.digest if reader.footer is not None else None,
        backend=h.backend.name,
        model=h.model.id,
        dtype=h.dtype,
        device=h.device,
        batch_size=h.batch.size,
        logprobs=h.logprobs.semantics,
        top_k=h.logprobs.top_k,
        rows=reader.rows_read,
    )


def _notes(original: Header, replay: Header) -> list[str]:
    notes = []
    if original.logprobs.semantics == "processed":
        notes.append(
            "The original's logprobs are processed (after the sampling transforms), the replay's raw: "
            "the logprob differences and KL estimates compare different quantities."
        )
    if original.logprobs.semantics == "none":
        notes.append("The original recorded no logprobs: only the replay's ranks (would flip) are measured.")
    if original.decoding.do_sample:
        notes.append(
            "The original sampled its tokens: a token that is not the greedy choice was expected there, "
            "so 'would flip' positions are not differences of setup."
        )
    return notes


def _verdict_text(baseline: bool, flips: int, positions: int) -> str:
    if baseline:
        head = (
            "The replay ran under the original's own setup: the drift below is the prefill/decode baseline "
            "(a forward pass over the whole sequence against step-by-step decoding), the noise floor of "
            "replay comparisons, not a setup difference."
        )
    else:
        head = (
            "The replay ran under another setup: the drift below is the setup difference plus the "
            "prefill/decode baseline (replay the original under its own setup to measure that)."
        )
    if flips == 0:
        return f"{head} Every recorded token is the replay's greedy choice ({positions} positions)."
    return f"{head} {flips} of {positions} recorded tokens would not be chosen greedily under the replay's setup."

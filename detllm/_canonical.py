"""Rows in their canonical form, and row lines proved canonical a part at a time.

The canonical form is what :class:`~detllm.writer.TraceWriter` writes: top-k entries
sorted by descending logprob then token id, none of logprob -inf, ``token_texts`` sorted
by id, encoded by :func:`~detllm.trace.encode`. :func:`is_canonical` and
:func:`encodes_as` tell whether a decoded row is already its canonical line, so that
the line can be copied as it was read.

:func:`prove_canonical_line` goes further for a large line: it proves that the line is
a row that :meth:`~detllm.reader.TraceReader.decode_row` accepts under a header and is
already canonical, with its top-k steps (most of a large row) decoded about a megabyte
of text at a time, never all at once. It proves and does not report: on any doubt it
says so, and the caller decodes the row whole, which names the problem exactly.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable, Sequence

import msgspec

from ._json_errors import DECODE_ERRORS
from .trace import (
    Header,
    Row,
    encode,
    placement_problems,
    row_shape_problems,
    top_k_problems,
)

__all__ = ["ProvedLine", "canonical_row", "encodes_as", "is_canonical", "prove_canonical_line"]

Steps = list[list[tuple[int, float]]]


def canonical_row(row: Row) -> Row:
    """Return ``row`` in canonical form, raising ValueError on non-finite values."""
    logprobs = row.logprobs
    if logprobs is not None:
        logprobs = [float(v) for v in logprobs]
        for i, value in enumerate(logprobs):
            if not math.isfinite(value):
                raise ValueError(f"row {row.prompt_id!r}: logprobs[{i}]: {value!r} is not a finite number")
    top = row.top_logprobs
    if top is not None:
        top = [_canonical_step(row.prompt_id, i, step) for i, step in enumerate(top)]
    texts = row.token_texts
    if texts is not None:
        texts = {int(k): texts[k] for k in sorted(texts, key=int)}
    return Row(
        prompt_id=str(row.prompt_id),
        input_token_ids=[int(t) for t in row.input_token_ids],
        token_ids=[int(t) for t in row.token_ids],
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason=row.finish_reason,
        token_texts=texts,
        prompt=row.prompt,
        batch=row.batch,
        ranks=None if row.ranks is None else [int(r) for r in row.ranks],
    )


def _canonical_step(prompt_id: str, index: int, step: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    entries: list[tuple[int, float]] = []
    for token, value in step:
        value = float(value)
        if value == -math.inf:
            continue  # probability zero: not an alternative
        if not math.isfinite(value):
            raise ValueError(f"row {prompt_id!r}: top_logprobs[{index}]: {value!r} is not a finite number")
        entries.append((int(token), value))
    entries.sort(key=lambda entry: (-entry[1], entry[0]))
    return entries


def is_canonical(row: Row) -> bool:
    """``row`` is what :func:`canonical_row` makes of it, checked without a copy: every
    top-k step sorted by descending logprob then token id, with finite logprobs, and
    ``token_texts`` sorted by id. (A decoded row has the field types already.)"""
    return _values_canonical(row.logprobs) and _steps_canonical(row.top_logprobs) and _texts_canonical(row.token_texts)


def _values_canonical(values: Sequence[float] | None) -> bool:
    finite = math.isfinite
    return all(type(value) is float and finite(value) for value in values or ())


def _steps_canonical(steps: Steps | None) -> bool:
    finite = math.isfinite
    for step in steps or ():
        previous: tuple[int, float] | None = None
        for entry in step:
            token, value = entry
            if type(token) is not int or type(value) is not float or not finite(value):
                return False
            if previous is not None and (-previous[1], previous[0]) > (-value, token):
                return False
            previous = entry
    return True


def _texts_canonical(texts: dict[int, str] | None) -> bool:
    if texts is None:
        return True
    keys = list(texts)
    return all(type(k) is int for k in keys) and keys == sorted(keys)


STEPS_AT_ONCE = 4096
_TOP_MEMBER = b'"top_logprobs":'
_NULL_TOP = _TOP_MEMBER + b"null"


def encodes_as(row: Row, raw: bytes) -> bool:
    """``encode(row) == raw``, with the top-k steps encoded a few thousand at a time
    (they are most of a large row), so that no second copy of the line is made."""
    top = row.top_logprobs
    if top is None or len(top) <= STEPS_AT_ONCE:
        return encode(row) == raw
    parts = _around_top(msgspec.structs.replace(row, top_logprobs=None), raw)
    if parts is None:
        return False
    start, end = parts
    pos = start + 1
    for at in range(0, len(top), STEPS_AT_ONCE):
        part = msgspec.json.encode(top[at : at + STEPS_AT_ONCE])[1:-1]
        if at:
            part = b"," + part
        if raw[pos : pos + len(part)] != part:
            return False
        pos += len(part)
    return pos + 1 == end


def _around_top(rest: Row, raw: bytes) -> tuple[int, int] | None:
    """Where the ``top_logprobs`` array lies in ``raw`` (``[start, end)``, its brackets
    included) when the rest of ``raw`` is ``rest``'s canonical encoding; None when it is not."""
    text = encode(rest)
    at = text.find(_NULL_TOP)
    if at < 0:
        return None
    head, tail = at + len(_TOP_MEMBER), len(text) - at - len(_NULL_TOP)
    end = len(raw) - tail
    view, expected = memoryview(raw), memoryview(text)  # compared without copies
    if end - head < 2 or view[:head] != expected[:head] or view[end:] != expected[at + len(_NULL_TOP) :]:
        return None
    if raw[head : head + 1] != b"[" or raw[end - 1 : end] != b"]":
        return None
    return head, end


def _line_struct() -> type[msgspec.Struct]:
    """:class:`~detllm.trace.Row` with ``top_logprobs`` left as raw JSON: the same fields
    and types otherwise, so it decodes (and refuses) the rest of a line as ``Row`` does."""
    fields = []
    for field in msgspec.structs.fields(Row):
        kind = msgspec.Raw if field.name == "top_logprobs" else field.type
        fields.append((field.name, kind) if field.default is msgspec.NODEFAULT else (field.name, kind, field.default))
    return msgspec.defstruct("RowLine", fields, kw_only=True, tag_field="record", tag="row")


RowLine = _line_struct()
_line_decoder = msgspec.json.Decoder(RowLine)
_steps_decoder = msgspec.json.Decoder(next(f.type for f in msgspec.structs.fields(Row) if f.name == "top_logprobs"))
_STEP_END = b"]],"
"""How a step that is not empty ends when another follows: no other bytes of a top-k
array of numbers, written without spaces, read so."""

CHUNK_BYTES = 1 << 20


class _Shape:
    """The fields :func:`~detllm.trace.row_shape_problems` reads, the top-k steps counted."""

    __slots__ = ("prompt_id", "finish_reason", "token_ids", "logprobs", "top_logprobs", "ranks")

    def __init__(self, line: msgspec.Struct, steps: int | None) -> None:
        for name in ("prompt_id", "finish_reason", "token_ids", "logprobs", "ranks"):
            setattr(self, name, getattr(line, name))
        self.top_logprobs = None if steps is None else range(steps)


class ProvedLine:
    """A row line proved valid and canonical under ``header`` (:func:`prove_canonical_line`)."""

    __slots__ = ("prompt_id", "raw", "header")

    def __init__(self, prompt_id: str, raw: bytes, header: Header) -> None:
        self.prompt_id = prompt_id
        self.raw = raw
        self.header = header


def prove_canonical_line(raw: bytes, header: Header, *, chunk_bytes: int = CHUNK_BYTES) -> ProvedLine | None:
    """The row line ``raw``, proved: :meth:`~detllm.reader.TraceReader.decode_row`
    accepts it under ``header`` (its types, no repeated member, every rule of
    :func:`~detllm.trace.row_problems`) and it is its row's canonical encoding, so that a
    writer keeps it as it is. None when that is not proved: the line may still be valid
    (a line not canonical never is proved).

    The top-k steps are decoded from about ``chunk_bytes`` of text at a time, cut where
    a step ends; each part is checked, and encoded again to compare with its bytes.
    """
    # The proof rests on one fact: every byte of ``raw`` is compared with the encoding of
    # what was decoded from it, the top-k steps a part at a time. So a repeated or
    # unknown member, a space, an integer written for a float, is refused there; the
    # decoder refuses wrong types and numbers out of range. What is left to check is
    # each rule of the format, and the one order that encoding keeps as decoded
    # (``token_texts``): the order of top-k entries is a rule of its own.
    try:
        line = _line_decoder.decode(raw)
    except DECODE_ERRORS:
        return None
    values = {f: getattr(line, f) for f in line.__struct_fields__ if f != "top_logprobs"}
    rest = Row(**values, top_logprobs=None)
    if not _texts_canonical(rest.token_texts) or any(placement_problems(rest.batch, header)):
        return None
    top = memoryview(line.top_logprobs)  # type: ignore[attr-defined]
    if top.nbytes == 4 and top.tobytes() == b"null":
        steps = None
        if encode(rest) != raw:
            return None
    else:
        parts = _around_top(rest, raw)
        if parts is None or rest.logprobs is None or len(rest.logprobs) != len(rest.token_ids):
            return None  # the steps are checked against the logprobs: their shape first
        # The parts decode into many small lists that live only until checked; a
        # collection pass over them costs more than the decoding (6x on a 1 MB part).
        collecting = gc.isenabled()
        gc.disable()
        try:
            steps = _proved_steps(raw, *parts, rest, header.logprobs.top_k, chunk_bytes)
        finally:
            if collecting:
                gc.enable()
        if steps is None:
            return None
    if any(row_shape_problems(_Shape(line, steps), header)):
        return None
    return ProvedLine(rest.prompt_id, raw, header)


def _proved_steps(raw: bytes, start: int, end: int, rest: Row, top_k: int, chunk_bytes: int) -> int | None:
    """Decode the top-k array ``raw[start:end]`` a part at a time, check each part as
    canonical (its bytes are its encoding) and valid, and count its steps; None on the
    first doubt, or when there are more steps than tokens."""
    token_ids, chosen = rest.token_ids, rest.logprobs
    assert chosen is not None
    pos, stop = start + 1, end - 1  # inside the brackets
    first = 0
    while pos < stop:
        cut = raw.find(_STEP_END, pos + chunk_bytes, stop) if pos + chunk_bytes < stop else -1
        cut = stop if cut < 0 else cut + 2
        part = raw[pos:cut]
        try:
            steps = _steps_decoder.decode(b"[" + part + b"]")
        except DECODE_ERRORS:
            return None
        if not steps or msgspec.json.encode(steps)[1:-1] != part:
            return None
        last = first + len(steps)
        if last > len(token_ids):
            return None
        ids, values = token_ids[first:last], chosen[first:last]
        if any(top_k_problems(ids, values, steps, top_k, first)):  # their order is a rule
            return None
        first = last
        if cut == stop:
            break
        pos = cut + 1  # past the comma
        if pos == stop:  # a comma before the closing bracket
            return None
    return first

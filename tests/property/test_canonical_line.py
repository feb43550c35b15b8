"""A row line proved canonical a part at a time is one the reader accepts and the writer
keeps as it is; and a canonical valid line is proved.

The proof (:func:`detllm._canonical.prove_canonical_line`) lets ``pack`` copy a large row
without decoding it whole, so a line it wrongly proves would put an invalid or altered
row into a repro pack. The oracle here is the slow path: :meth:`TraceReader.decode_row`
and the row's canonical encoding.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detllm import Batch, Decoding, Header, Logprobs, Placement, Row, TraceFormatError, open_trace, write_trace
from detllm._canonical import prove_canonical_line
from detllm.reader import TraceReader
from detllm.trace import encode
from detllm.writer import TraceWriter, canonical_row

from ..factories import make_header, make_row
from .strategies import json_paths, json_values, rows

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The bytes that matter to JSON numbers, arrays and members: most edits with them stay
# decodable, so that the proof's own checks (not the decoder) have to refuse the line.
_EDIT_BYTES = b' ,[]-+.0123456789eE"{}:n'


@contextmanager
def _reader(header: Header) -> Iterator[TraceReader]:
    with tempfile.TemporaryDirectory() as tmp:
        with open_trace(write_trace(Path(tmp) / "h.jsonl", header, [])) as reader:
            yield reader


def _kept_as_is(reader: TraceReader, raw: bytes) -> bool:
    """The slow path: the reader accepts the line and its canonical encoding is the line."""
    try:
        row = reader.decode_row(2, raw)
    except TraceFormatError:
        return False
    return encode(canonical_row(row)) == raw


@st.composite
def headers(draw: st.DrawFn) -> Header:
    semantics = draw(st.sampled_from(["raw", "processed", "none"]))
    top_k = 0 if semantics == "none" else draw(st.integers(0, 3))
    return make_header(
        decoding=Decoding(do_sample=False, max_new_tokens=8),
        logprobs=Logprobs(semantics=semantics, top_k=top_k),  # type: ignore[arg-type]
        batch=Batch(size=draw(st.integers(1, 4))),
    )


@st.composite
def canonical_lines(draw: st.DrawFn, header: Header) -> bytes:
    """A row's canonical line, valid under ``header`` or close to it."""
    row = draw(rows(draw(st.sampled_from(["p0", "a\u00e9\\\"", "x" * 40])), header.logprobs.top_k))
    if header.logprobs.semantics == "none":
        row = msgspec.structs.replace(row, logprobs=None, top_logprobs=None)
    if draw(st.booleans()):
        size = draw(st.integers(1, 5))
        placement = Placement(index=draw(st.integers(0, 3)), position=draw(st.integers(0, 5)), size=size)
        row = msgspec.structs.replace(row, batch=placement)
    if draw(st.booleans()):
        row = msgspec.structs.replace(row, ranks=draw(st.lists(st.integers(1, 9), min_size=len(row.token_ids), max_size=len(row.token_ids))))
    return encode(canonical_row(row))


def _get(value: object, path: tuple[object, ...]) -> object:
    for key in path:
        value = value[key]  # type: ignore[index]
    return value


@st.composite
def edited(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` as it is, or with one edit: of its bytes, of one JSON value, or of one top-k step."""
    kind = draw(st.sampled_from(["none", "byte", "insert", "delete", "value", "step", "member", "texts"]))
    if kind == "none":
        return raw
    if kind in ("byte", "insert", "delete"):
        at = draw(st.integers(0, len(raw) - 1))
        new = bytes([draw(st.sampled_from(_EDIT_BYTES))])
        if kind == "delete":
            return raw[:at] + raw[at + 1 :]
        return raw[:at] + new + raw[at + (kind == "byte") :]
    record = msgspec.json.decode(raw)
    if kind == "member":  # a member repeated, or one not in the format
        name = draw(st.sampled_from([*record, "extra"]))
        member = msgspec.json.encode({name: record.get(name, 1)})[1:-1]
        return raw[:-1] + b"," + member + b"}"
    if kind == "texts":  # token texts out of id order, as a foreign writer may leave them
        texts = record.get("token_texts") or {}
        record["token_texts"] = dict(reversed(texts.items()))
        return msgspec.json.encode(record)
    if kind == "value":
        where = draw(st.sampled_from(json_paths(record)[1:]))
        parent, key = _get(record, where[:-1]), where[-1]
        parent[key] = draw(json_values)  # type: ignore[index]
        return msgspec.json.encode(record)
    top = record.get("top_logprobs")
    steps = [s for s in top or [] if len(s) > 1]
    if not steps:
        return raw
    step = draw(st.sampled_from(steps))
    i = draw(st.integers(1, len(step) - 1))
    change = draw(st.sampled_from(["swap", "repeat id", "tie", "reverse", "drop", "lower"]))
    if change == "swap":
        step[i - 1], step[i] = step[i], step[i - 1]
    elif change == "repeat id":
        step[i][0] = step[i - 1][0]
    elif change == "tie":
        step[i][1] = step[i - 1][1]
    elif change == "reverse":
        step.reverse()
    elif change == "drop":
        del step[i]
    else:
        step[0][1] = step[i][1] - 1.0
    return msgspec.json.encode(record)


@SETTINGS
@given(st.data())
def test_a_proved_line_is_accepted_and_kept_as_it_is(data: st.DataObject) -> None:
    header = data.draw(headers())
    raw = data.draw(edited(data.draw(canonical_lines(header))))
    chunk = data.draw(st.sampled_from([1, 2, 7, 64, 1 << 20]))
    with _reader(header) as reader:
        kept = _kept_as_is(reader, raw)
        proved = prove_canonical_line(raw, header, chunk_bytes=chunk)
        assert (proved is not None) == kept, raw
        assert (reader.prove_line(raw) is not None) == kept
    if proved is not None:
        assert proved.raw is raw and proved.header is header
        assert proved.prompt_id == msgspec.json.decode(raw)["prompt_id"]


@SETTINGS
@given(st.data())
def test_a_line_proved_under_one_header_is_proved_again_under_the_writers(data: st.DataObject) -> None:
    first, second = data.draw(headers()), data.draw(headers())
    raw = data.draw(canonical_lines(first))
    proved = prove_canonical_line(raw, first, chunk_bytes=3)
    if proved is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        with _reader(second) as reader:
            kept = _kept_as_is(reader, raw)
        with TraceWriter(path, second) as writer:
            assert writer.write_line(proved) == kept
        lines = path.read_bytes().splitlines()
        assert lines[1:-1] == ([raw] if kept else [])


def _large_row(steps: int) -> Row:
    row = make_row("big", n=steps)
    return msgspec.structs.replace(row, token_texts={t: "t" for t in row.token_ids})


def test_a_large_line_is_proved_a_part_at_a_time_and_any_damaged_part_refused() -> None:
    header = make_header(decoding=Decoding(do_sample=False, max_new_tokens=3000))
    raw = encode(_large_row(3000))
    with _reader(header) as reader:
        assert _kept_as_is(reader, raw)
    assert raw.count(b"]],") > 100  # many places to cut
    for chunk in (1, 100, 4096, len(raw)):
        assert prove_canonical_line(raw, header, chunk_bytes=chunk) is not None
    top = raw.index(b'"top_logprobs":')
    for at in range(top + 20, len(raw) - 200, 997):  # a digit or separator anywhere in the steps
        damaged = raw[:at] + (b"9" if raw[at : at + 1] != b"9" else b"8") + raw[at + 1 :]
        with _reader(header) as reader:
            assert (prove_canonical_line(damaged, header, chunk_bytes=512) is not None) == _kept_as_is(reader, damaged), at


def test_the_proof_leaves_garbage_collection_as_it_found_it() -> None:
    header = make_header()
    raw = encode(make_row("p0", n=3))
    assert gc.isenabled()
    try:
        assert prove_canonical_line(raw, header, chunk_bytes=1) is not None
        assert gc.isenabled()
        gc.disable()
        assert prove_canonical_line(raw, header, chunk_bytes=1) is not None
        assert not gc.isenabled()
    finally:
        gc.enable()

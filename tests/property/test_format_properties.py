"""Properties of the reader, writer and validator under arbitrary and damaged input."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detllm import TraceFormatError, open_trace, validate_trace, write_trace
from detllm.writer import canonical_row

from ..factories import make_header, make_row
from .strategies import json_paths, json_values, traces

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read_all(path: Path, **options: object) -> list[object]:
    with open_trace(path, **options) as reader:
        return list(reader)


@SETTINGS
@given(traces())
def test_write_then_read_gives_the_same_records(trace) -> None:  # type: ignore[no-untyped-def]
    header, rows = trace
    with tempfile.TemporaryDirectory() as tmp:
        path = write_trace(Path(tmp) / "t.jsonl", header, rows)
        with open_trace(path) as reader:
            assert reader.header == header
            assert list(reader) == [canonical_row(r) for r in rows]
        assert validate_trace(path).valid


@SETTINGS
@given(traces())
def test_identical_content_gives_identical_bytes(trace) -> None:  # type: ignore[no-untyped-def]
    header, rows = trace
    with tempfile.TemporaryDirectory() as tmp:
        a = write_trace(Path(tmp) / "a.jsonl", header, rows)
        decoded = _read_all(a)
        b = write_trace(Path(tmp) / "b.jsonl", header, decoded)  # type: ignore[arg-type]
        assert a.read_bytes() == b.read_bytes()


def _check_only_format_errors(path: Path) -> None:
    try:
        _read_all(path)
    except TraceFormatError:
        pass
    result = validate_trace(path)  # never raises for a readable file
    for finding in result.findings:
        assert finding.path == str(path)
        assert finding.line >= 1
        assert finding.field
        assert "\n" not in finding.problem


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_only_format_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        path.write_bytes(data)
        _check_only_format_errors(path)
        assert not validate_trace(path).valid


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200) | json_values.map(msgspec.json.encode), min_size=1, max_size=5))
def test_arbitrary_json_lines_after_a_valid_header_give_only_format_errors(lines: list[bytes]) -> None:
    header_line = msgspec.json.encode(make_header())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        path.write_bytes(b"\n".join([header_line, *lines]) + b"\n")
        _check_only_format_errors(path)


def _small_trace(tmp: Path, name: str) -> Path:
    return write_trace(tmp / name, make_header(), [make_row("a", n=2), make_row("b", n=3)])


def test_truncation_at_every_byte_offset_is_detected(tmp_path: Path) -> None:
    full = _small_trace(tmp_path, "full.jsonl").read_bytes()
    complete_rows = _read_all(tmp_path / "full.jsonl")
    cut = tmp_path / "cut.jsonl"
    for offset in range(len(full)):
        cut.write_bytes(full[:offset])
        result = validate_trace(cut)
        if offset >= len(full) - 1:  # only the final newline is missing: still whole
            assert result.valid, offset
            continue
        assert not result.valid, offset
        try:
            _read_all(cut)
        except TraceFormatError:
            pass
        else:
            raise AssertionError(f"a trace cut at byte {offset} was read as complete")
        try:
            rows = _read_all(cut, allow_incomplete=True)
        except TraceFormatError:
            assert offset < len(full.split(b"\n", 1)[0]) + 1  # only a cut header is fatal
        else:
            assert rows == complete_rows[: len(rows)], offset


def test_gzip_truncation_at_every_byte_offset_is_detected(tmp_path: Path) -> None:
    full = _small_trace(tmp_path, "full.jsonl.gz").read_bytes()
    complete_rows = _read_all(tmp_path / "full.jsonl.gz")
    cut = tmp_path / "cut.jsonl.gz"
    for offset in range(len(full)):
        cut.write_bytes(full[:offset])
        assert not validate_trace(cut).valid, offset
        try:
            rows = _read_all(cut, allow_incomplete=True)
        except TraceFormatError:
            continue
        assert rows == complete_rows[: len(rows)], offset
    assert gzip.decompress(full)  # the uncut file is a whole gzip stream


def _replace(value: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (_replace(v, rest, new) if k == head else v) for k, v in value.items()}
    assert isinstance(value, list)
    return [(_replace(v, rest, new) if i == head else v) for i, v in enumerate(value)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_one_mutated_field_gives_only_format_errors(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _small_trace(Path(tmp), "t.jsonl")
        lines = path.read_bytes().splitlines()
        index = data.draw(st.integers(0, len(lines) - 1))
        record = msgspec.json.decode(lines[index])
        where = data.draw(st.sampled_from(json_paths(record)[1:]))
        lines[index] = msgspec.json.encode(_replace(record, where, data.draw(json_values)))
        path.write_bytes(b"\n".join(lines) + b"\n")
        _check_only_format_errors(path)

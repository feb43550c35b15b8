from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import msgspec
import pytest

from detllm import (
    IncompleteTraceError,
    NewerMinorVersionWarning,
    TraceFormatError,
    TraceWriter,
    UnsupportedVersionError,
    open_trace,
    read_header,
    write_trace,
)
from detllm._json_errors import explain
from detllm.trace import encode
from detllm.writer import PARTIAL_SUFFIX

from .factories import make_header, make_row


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    header = make_header()
    rows = [make_row(f"p{i}", n=i + 1) for i in range(5)]
    path = write_trace(tmp_path / name, header, rows)
    assert not (tmp_path / (name + PARTIAL_SUFFIX)).exists()
    with open_trace(path) as reader:
        assert reader.header == header
        assert list(reader) == rows
        assert reader.complete
        assert reader.footer is not None and reader.footer.rows == 5


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    plain = write_trace(tmp_path / "t.jsonl", make_header(), [make_row()])
    disguised = tmp_path / "t.jsonl"
    disguised.write_bytes(gzip.compress(plain.read_bytes()))
    with open_trace(disguised) as reader:
        assert [r.prompt_id for r in reader] == ["p0"]


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    a = write_trace(tmp_path / "a.jsonl.gz", make_header(), [make_row()])
    b = write_trace(tmp_path / "b.jsonl.gz", make_header(), [make_row()])
    assert a.read_bytes() == b.read_bytes()


def test_equal_rows_encode_to_equal_bytes_regardless_of_input_order(tmp_path: Path) -> None:
    row = make_row()
    shuffled = make_row(
        top_logprobs=[list(reversed(step)) for step in row.top_logprobs or []],
        token_texts=dict(reversed(list((row.token_texts or {}).items()))),
    )
    a = write_trace(tmp_path / "a.jsonl", make_header(), [row])
    b = write_trace(tmp_path / "b.jsonl", make_header(), [shuffled])
    assert a.read_bytes().splitlines()[1] == b.read_bytes().splitlines()[1]


def test_writer_drops_impossible_alternatives_and_refuses_nan(tmp_path: Path) -> None:
    row = make_row(n=1, top_logprobs=[[(10, -0.25), (11, float("-inf"))]])
    path = write_trace(tmp_path / "t.jsonl", make_header(), [row])
    with open_trace(path) as reader:
        assert next(iter(reader)).top_logprobs == [[(10, -0.25)]]
    with pytest.raises(ValueError, match=r"logprobs\[0\]: nan is not a finite number"):
        write_trace(tmp_path / "u.jsonl", make_header(), [make_row(n=1, logprobs=[float("nan")])])


def test_writer_refuses_rows_breaking_the_rules(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "t.jsonl", make_header()) as writer:
        writer.write(make_row("a"))
        with pytest.raises(ValueError, match="duplicate prompt id"):
            writer.write(make_row("a"))
        with pytest.raises(ValueError, match="logprobs: has 3 entries but token_ids has 4"):
            writer.write(make_row("b", logprobs=[-1.0, -1.0, -1.0]))
    with open_trace(tmp_path / "t.jsonl") as reader:
        assert [r.prompt_id for r in reader] == ["a"]


def test_crash_leaves_a_partial_file_that_reads_as_incomplete(tmp_path: Path) -> None:
    target = tmp_path / "t.jsonl"
    with pytest.raises(RuntimeError):
        with TraceWriter(target, make_header()) as writer:
            writer.write(make_row("a"))
            writer.write(make_row("b"))
            raise RuntimeError("crash")
    partial = tmp_path / ("t.jsonl" + PARTIAL_SUFFIX)
    assert not target.exists()
    with open_trace(partial) as reader:
        with pytest.raises(IncompleteTraceError) as info:
            list(reader)
    assert str(info.value) == (
        f"{partial}:4: footer: missing: the trace ends after 2 rows without its footer "
        "(the run that wrote it did not finish, or the file was cut)"
    )
    with open_trace(partial, allow_incomplete=True) as reader:
        assert [r.prompt_id for r in reader] == ["a", "b"]
        assert not reader.complete


def test_allow_incomplete_drops_a_row_cut_mid_line(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.jsonl", make_header(), [make_row("a"), make_row("b")])
    lines = path.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:2]) + lines[2][:40])
    with open_trace(cut, allow_incomplete=True) as reader:
        assert [r.prompt_id for r in reader] == ["a"]
    with open_trace(cut) as reader, pytest.raises(TraceFormatError) as info:
        list(reader)
    assert str(info.value).startswith(f"{cut}:3: -: not valid JSON")


def test_modified_row_breaks_the_digest(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.jsonl", make_header(), [make_row()])
    path.write_bytes(path.read_bytes().replace(b'"finish_reason":"length"', b'"finish_reason":"stop"'))
    with open_trace(path) as reader, pytest.raises(TraceFormatError, match="digest: does not match"):
        list(reader)
    with open_trace(path, verify_digest=False) as reader:
        assert next(iter(reader)).finish_reason == "stop"


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    header = msgspec.json.decode(encode(make_header()))
    header["future_field"] = {"x": [1, 2]}
    row = msgspec.json.decode(encode(make_row()))
    row["future_row_field"] = 7
    path = tmp_path / "t.jsonl"
    lines = [msgspec.json.encode(header), msgspec.json.encode(row)]
    import hashlib

    digest = hashlib.sha256(lines[1] + b"\n").hexdigest()
    lines.append(msgspec.json.encode({"record": "footer", "rows": 1, "digest": f"sha256:{digest}"}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    with open_trace(path) as reader:
        assert list(reader) == [make_row()]


def _with_version(tmp_path: Path, version: str) -> Path:
    path = write_trace(tmp_path / "t.jsonl", make_header(), [make_row()])
    path.write_bytes(path.read_bytes().replace(b'"version":"1.0"', f'"version":"{version}"'.encode(), 1))
    return path


def test_newer_minor_version_is_read_with_a_warning(tmp_path: Path) -> None:
    path = _with_version(tmp_path, "1.7")
    with pytest.warns(NewerMinorVersionWarning, match="trace version 1.7 is newer than 1.2"):
        reader = open_trace(path)
    with reader:
        assert len(list(reader)) == 1


def test_other_major_version_is_refused(tmp_path: Path) -> None:
    path = _with_version(tmp_path, "2.0")
    with pytest.raises(UnsupportedVersionError) as info:
        open_trace(path)
    assert str(info.value) == f"{path}:1: version: major version 2 is not supported (this detLLM reads 1.x traces)"


def test_newer_minor_skips_unknown_records(tmp_path: Path) -> None:
    path = _with_version(tmp_path, "1.3")
    lines = path.read_bytes().splitlines(keepends=True)
    # An unknown record type is covered by the digest; rebuild the footer to match.
    import hashlib

    extra = b'{"record":"note","text":"hello"}\n'
    body = [lines[1], extra]
    digest = hashlib.sha256(b"".join(body)).hexdigest()
    footer = f'{{"record":"footer","rows":1,"digest":"sha256:{digest}"}}\n'.encode()
    path.write_bytes(lines[0] + b"".join(body) + footer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NewerMinorVersionWarning)
        with open_trace(path) as reader:
            assert len(list(reader)) == 1


def test_read_header_only(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.jsonl", make_header(dtype="bfloat16"), [make_row()])
    assert read_header(path).dtype == "bfloat16"


def test_raw_rows_are_the_lines_as_written(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.jsonl", make_header(), [make_row("a"), make_row("b")])
    lines = path.read_bytes().splitlines()
    with open_trace(path) as reader:
        raw = list(reader.raw_rows())
        assert raw == [(2, lines[1]), (3, lines[2])]
        assert reader.decode_row(*raw[1]).prompt_id == "b"
        assert reader.complete


def test_overlong_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    header = make_header(decoding=msgspec.structs.replace(make_header().decoding, max_new_tokens=64))
    path = write_trace(tmp_path / "t.jsonl", header, [make_row("a", n=64)])
    assert len(path.read_bytes().splitlines()[0]) < 1500 < len(path.read_bytes().splitlines()[1])
    with open_trace(path, max_line_bytes=1500) as reader, pytest.raises(TraceFormatError) as info:
        list(reader)
    assert str(info.value) == f"{path}:2: -: line is longer than 1500 bytes"


BAD_UTF8 = b'{"record": "row", "prompt_id": "caf\xc3"}'


@pytest.mark.parametrize(
    "exc",
    [
        msgspec.DecodeError("Invalid UTF-8 (byte 35)"),  # msgspec 0.23
        msgspec.DecodeError("JSON is malformed: invalid character (byte 35)"),  # another wording
        UnicodeDecodeError("utf-8", BAD_UTF8, 35, 36, "invalid continuation byte"),  # msgspec 0.18
    ],
)
def test_bad_utf8_is_worded_by_detllm_whatever_msgspec_raised(exc: Exception) -> None:
    assert explain(exc, BAD_UTF8) == ("-", "not valid UTF-8 (byte 0xc3 at column 36)")


@pytest.mark.parametrize("steps", [3, 5000])  # 5000: the top-k steps compared a few thousand at a time
def test_a_row_given_with_its_canonical_line_is_written_as_it_is_and_any_other_line_as_the_row(
    tmp_path: Path, steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detllm import writer as module
    from detllm.trace import Decoding

    header = make_header(decoding=Decoding(do_sample=False, max_new_tokens=steps))
    row = make_row("p0", n=steps)
    canonical = encode(row)
    assert row.top_logprobs is not None
    unsorted = msgspec.structs.replace(row, top_logprobs=[list(reversed(step)) for step in row.top_logprobs])
    original, calls = module.canonical_row, []
    monkeypatch.setattr(module, "canonical_row", lambda r: calls.append(r) or original(r))
    for number, (given, raw) in enumerate([(row, canonical), (row, canonical.replace(b",", b", ", 1)),
                                           (row, canonical[:-1] + b" }"), (unsorted, encode(unsorted)), (row, None)]):
        calls.clear()
        with TraceWriter(tmp_path / f"t{number}.jsonl", header) as writer:
            writer.write(given, raw)
        assert (tmp_path / f"t{number}.jsonl").read_bytes().splitlines()[1] == canonical  # the same bytes every way
        assert bool(calls) == (raw is not canonical), number  # canonicalised unless the line already was
    assert module.is_canonical(row) and not module.is_canonical(unsorted)

"""Trace format 1.1: the replay header member and row ranks, written only when used."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from detllm import open_trace, validate_trace, write_trace
from detllm.trace import REPLAY_VERSION, VERSION, Replay, encode, row_decoder, row_members_unique, row_problems

from .conftest import ROOT
from .factories import make_header, make_row

DIGEST = "sha256:" + "0f" * 32


def replay_header(**changes):
    return make_header(version=REPLAY_VERSION, replay=Replay(source_digest=DIGEST, source_rows=1, source_name="t.jsonl"), **changes)


def test_a_trace_without_1_1_members_keeps_its_1_0_bytes() -> None:
    header, row = make_header(), make_row()
    assert header.version == VERSION == "1.0"
    assert b"replay" not in encode(header) and b"ranks" not in encode(row)
    assert encode(header).endswith(b',"labels":{}}')
    assert encode(row).endswith(b',"batch":null}')


@pytest.mark.parametrize("path", sorted((ROOT / "fixtures" / "traces" / "valid").glob("*.jsonl")), ids=lambda p: p.name)
def test_committed_1_0_rows_reencode_to_the_same_bytes(path: Path) -> None:
    lines = path.read_bytes().splitlines()
    for raw in lines[1:-1]:
        assert encode(row_decoder.decode(raw)) == raw


def test_a_replay_trace_writes_its_members_and_reads_back(tmp_path: Path) -> None:
    row = make_row(ranks=[1, 1, 2, 1])
    path = write_trace(tmp_path / "r.jsonl", replay_header(), [row])
    lines = path.read_bytes().splitlines()
    head = json.loads(lines[0])
    assert head["version"] == "1.1"
    assert head["replay"] == {"source_digest": DIGEST, "source_rows": 1, "source_name": "t.jsonl", "forced": True}
    assert lines[1].endswith(b',"ranks":[1,1,2,1]}')
    assert row_members_unique(lines[1], row_decoder.decode(lines[1]))
    with open_trace(path) as reader:
        assert reader.header.replay == replay_header().replay
        assert [r.ranks for r in reader] == [[1, 1, 2, 1]]
    assert validate_trace(path).valid


def test_a_repeated_ranks_member_is_refused(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "r.jsonl", replay_header(), [make_row(ranks=[1, 1, 1, 1])])
    lines = path.read_bytes().splitlines()
    doubled = lines[1][:-1] + b',"ranks":[1,1,1,1]}'
    assert not row_members_unique(doubled, row_decoder.decode(doubled))


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        (make_header(), make_row(ranks=[1, 1, 1, 1]), ("ranks", "needs trace version 1.1 or later, the header says '1.0'")),
        (replay_header(), make_row(ranks=[1, 1]), ("ranks", "has 2 entries but token_ids has 4")),
    ],
)
def test_row_rules_of_ranks(header, row, expected) -> None:
    assert list(row_problems(row, header)) == [expected]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"version": "1.0"}, ("replay", "needs trace version 1.1 or later, the header says '1.0'")),
        ({"replay": Replay(source_digest="md5:abc", source_rows=1)}, ("replay.source_digest", "must be 'sha256:' and 64 lowercase hex digits, got 'md5:abc'")),
        ({"replay": Replay(source_digest=DIGEST, source_rows=1, forced=False)}, ("replay.forced", "must be true: a replay feeds the source's tokens")),
    ],
)
def test_header_rules_of_replay(tmp_path: Path, changes, expected) -> None:
    header = msgspec.structs.replace(replay_header(), **changes)
    with pytest.raises(ValueError) as info:
        write_trace(tmp_path / "r.jsonl", header, [])
    assert str(info.value) == f"invalid header: {expected[0]}: {expected[1]}"


def test_rank_zero_is_not_a_rank(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "r.jsonl", replay_header(), [make_row(ranks=[1, 1, 1, 1])])
    path.write_bytes(path.read_bytes().replace(b'"ranks":[1,1,1,1]', b'"ranks":[1,0,1,1]'))
    report = validate_trace(path)
    assert not report.valid
    assert (report.findings[0].line, report.findings[0].field) == (2, "ranks[1]"), report.findings

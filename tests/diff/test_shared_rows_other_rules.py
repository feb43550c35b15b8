"""Rows two traces share byte for byte, under headers whose row rules differ.

A shared row is valid under both headers or under neither only when the rules read the
same header fields alike (``row_rules_key``). Where they differ, the row may break the
rules of one header: ``diff`` and ``report`` must then say so as ``validate`` does,
whether the rows are in step or met out of order, in one process or two.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from detllm import Batch, Decoding, Logprobs, Placement, Row, validate_trace
from detllm.cli import main
from detllm.errors import TraceFormatError
from detllm.reader import TraceReader
from detllm.trace import row_problems, row_rules_key
from detllm.writer import write_trace

from tests.factories import make_header, make_row

ROWS = [
    make_row("a", n=3, batch=Placement(index=0, position=0, size=2, step=0)),
    make_row("b", n=4, batch=Placement(index=0, position=1, size=2, step=1)),
    make_row("c", n=2),
]
BASE = make_header(version="1.2")

STRICTER = {
    "top_k": {"logprobs": Logprobs(semantics="raw", top_k=2)},
    "max_new_tokens": {"decoding": Decoding(do_sample=False, max_new_tokens=3)},
    "batch_size": {"batch": Batch(size=1)},
    "no_logprobs": {"logprobs": Logprobs(semantics="none", top_k=0)},
    "version": {"version": "1.1"},
}


def _findings(path: Path) -> list[str]:
    """What the reader says of each row of ``path`` that breaks a rule, in line order."""
    assert not validate_trace(path).valid
    found = []
    with TraceReader(path, verify_digest=False) as reader:
        for line, raw in reader.raw_rows():
            try:
                reader.decode_row(line, raw)
            except TraceFormatError as error:
                found.append(str(error))
    return found


@pytest.mark.parametrize("change", sorted(STRICTER))
@pytest.mark.parametrize("order", ["in-step", "reversed"])
@pytest.mark.parametrize("command", ["diff", "diff-swapped", "diff-workers", "report"])
def test_a_shared_row_that_breaks_the_other_headers_rules_is_named(
    tmp_path: Path, change: str, order: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    left = write_trace(tmp_path / "left.jsonl", BASE, ROWS)
    stricter = msgspec.structs.replace(BASE, **STRICTER[change])
    assert row_rules_key(stricter) != row_rules_key(BASE)
    rows = ROWS if order == "in-step" else ROWS[::-1]
    right = tmp_path / "right.jsonl"
    write_trace(tmp_path / "scratch.jsonl", BASE, rows)
    lines = (tmp_path / "scratch.jsonl").read_bytes().splitlines(keepends=True)
    lines[0] = msgspec.json.encode(stricter) + b"\n"  # the rows as written under BASE, bytes unchanged
    right.write_bytes(b"".join(lines))
    findings = _findings(right)
    assert str(validate_trace(right).findings[0]) == findings[0]
    argv = {
        "diff": ["diff", str(left), str(right)],
        "diff-swapped": ["diff", str(right), str(left)],
        "diff-workers": ["diff", "--workers", "2", str(left), str(right)],
        "report": ["report", str(left), str(right), str(left)],
    }[command]
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and err.endswith("\n") and err.count("\n") == 1, err
    # In step, the first row that breaks a rule is named, as validate names it; met out
    # of order, the first such row the comparison reaches.
    if order == "in-step":
        assert err == f"detllm: {findings[0]}\n"
    else:
        assert err.removeprefix("detllm: ").rstrip("\n") in findings, err


def test_shared_rows_under_headers_of_the_same_rules_are_read_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    left = write_trace(tmp_path / "left.jsonl", BASE, ROWS)
    other = msgspec.structs.replace(BASE, dtype="bfloat16", labels={"run": "b"})
    assert row_rules_key(other) == row_rules_key(BASE)
    right = write_trace(tmp_path / "right.jsonl", other, ROWS)
    assert main(["diff", "--json", str(left), str(right)]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["summary"]["statuses"]["identical"] == 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("dtype", "bfloat16"),
        ("device", "cuda:0"),
        ("created_at", "2026-12-01T00:00:00Z"),
        ("labels", {"x": "y"}),
        ("backend_settings", {"max_num_seqs": 4}),
        ("decoding", Decoding(do_sample=True, temperature=0.5, top_p=0.9, top_k=5, max_new_tokens=8, seed=3)),
        ("batch", Batch(size=2, composition="reversed")),
        ("logprobs", Logprobs(semantics="processed", top_k=3)),
        ("version", "1.3"),
    ],
)
def test_a_header_field_outside_the_key_changes_no_row_rule(field: str, value: object) -> None:
    """The key is what the rules read: a header that differs elsewhere judges every row alike."""
    other = msgspec.structs.replace(BASE, **{field: value})
    assert row_rules_key(other) == row_rules_key(BASE)
    broken = [
        *ROWS,
        make_row("d", n=9),
        make_row("e", n=2, batch=Placement(index=3, position=2, size=2)),
        make_row("f", n=2, logprobs=None),
        make_row("g", n=2, ranks=[1, 2]),
    ]
    for row in broken:
        assert list(row_problems(row, other)) == list(row_problems(row, BASE)), row.prompt_id


def _two_alternatives(row: Row) -> Row:
    assert row.top_logprobs is not None
    return msgspec.structs.replace(row, top_logprobs=[step[:2] for step in row.top_logprobs])


@pytest.mark.parametrize("change", ["max_new_tokens", "top_k"])
@pytest.mark.parametrize("command", ["diff", "diff-workers", "report"])
def test_a_shared_row_met_out_of_order_is_checked_under_the_rules_it_arrives_under(
    tmp_path: Path, change: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only ``b`` breaks the right header's rules (its 4 tokens, more than
    ``max_new_tokens`` 3; its 3 alternatives a step, more than ``top_k`` 2), and the
    right trace lists it last: its copy on the right arrives after the left's, matched
    out of order, so only a check of the shared bytes under the right header finds it."""
    rows = [_two_alternatives(ROWS[0]), ROWS[1], _two_alternatives(ROWS[2])]
    left = write_trace(tmp_path / "left.jsonl", BASE, rows)
    stricter = msgspec.structs.replace(BASE, **STRICTER[change])
    write_trace(tmp_path / "scratch.jsonl", BASE, [rows[0], rows[2], rows[1]])
    lines = (tmp_path / "scratch.jsonl").read_bytes().splitlines(keepends=True)
    right = tmp_path / "right.jsonl"
    right.write_bytes(msgspec.json.encode(stricter) + b"\n" + b"".join(lines[1:]))
    (finding,) = _findings(right)
    assert finding.startswith(f"{right}:4: ")
    argv = {
        "diff": ["diff", str(left), str(right)],
        "diff-workers": ["diff", "--workers", "2", str(left), str(right)],
        "report": ["report", str(left), str(left), str(right)],
    }[command]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"detllm: {finding}\n"


def _rule_headers():  # type: ignore[no-untyped-def]
    from hypothesis import strategies as st

    @st.composite
    def header(draw):  # type: ignore[no-untyped-def]
        semantics = draw(st.sampled_from(["raw", "none"]))
        return make_header(
            version=draw(st.sampled_from(["1.0", "1.1", "1.2"])),
            decoding=Decoding(do_sample=False, max_new_tokens=draw(st.integers(1, 9))),
            logprobs=Logprobs(semantics=semantics, top_k=0 if semantics == "none" else draw(st.integers(0, 4))),  # type: ignore[arg-type]
            batch=Batch(size=draw(st.integers(1, 4))),
        )

    return header()


def test_a_row_judged_otherwise_under_two_headers_is_flagged_under_one() -> None:
    """The quick filter's promise, against the exact rules: wherever a row breaks other
    rules under two headers, the filter flags the row under one of them."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from detllm.trace import encode, may_break_other_rules

    from tests.property.strategies import rows as random_rows

    @settings(max_examples=400, deadline=None)
    @given(a=_rule_headers(), b=_rule_headers(), data=st.data())
    def check(a, b, data) -> None:  # type: ignore[no-untyped-def]
        row = data.draw(random_rows("p0", top_k=4, max_tokens=9))
        if data.draw(st.booleans()):
            row = msgspec.structs.replace(row, logprobs=None, top_logprobs=None)
        if data.draw(st.booleans()):
            size = data.draw(st.integers(1, 5))
            step = data.draw(st.none() | st.integers(0, 3))
            row = msgspec.structs.replace(row, batch=Placement(index=0, position=data.draw(st.integers(0, 5)), size=size, step=step))
        if data.draw(st.booleans()):
            row = msgspec.structs.replace(row, ranks=[1] * len(row.token_ids))
        raw = encode(row)
        # The rules broken, by field (a message may quote the header's own version).
        if [f for f, _ in row_problems(row, a)] != [f for f, _ in row_problems(row, b)]:
            assert may_break_other_rules(raw, a, b) or may_break_other_rules(raw, b, a)
        if row_rules_key(a) == row_rules_key(b):
            assert not may_break_other_rules(raw, a, b)

    check()

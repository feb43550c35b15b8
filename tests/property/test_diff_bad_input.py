"""diff and report on damaged traces: a verdict or a one-line error, never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detllm import validate_trace
from detllm.cli import main
from detllm.writer import write_trace

from ..factories import make_header, make_row
from .strategies import json_paths, json_values
from .test_format_properties import _replace

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _pair(tmp: Path) -> tuple[Path, Path]:
    rows = [make_row("a", n=3), make_row("b", n=4), make_row("c", n=2)]
    return write_trace(tmp / "left.jsonl", make_header(), rows), write_trace(tmp / "right.jsonl", make_header(), rows)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], damaged: Path) -> None:
    """Run ``argv``: a damaged trace is one line and exit 2, a sound one a verdict (0 or 1)."""
    valid = validate_trace(damaged).valid
    code = main(argv)
    _, err = capsys.readouterr()
    if valid:
        assert code in (0, 1), err
    else:
        assert code == 2, f"a damaged trace gave exit {code}"
        assert len(err.splitlines()) == 1, err
        assert err.startswith("detllm: ")


@SETTINGS
@given(data=st.data())
def test_one_mutated_field(capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        left, right = _pair(Path(tmp))
        lines = right.read_bytes().splitlines()
        index = data.draw(st.integers(0, len(lines) - 1))
        record = msgspec.json.decode(lines[index])
        where = data.draw(st.sampled_from(json_paths(record)[1:]))
        lines[index] = msgspec.json.encode(_replace(record, where, data.draw(json_values)))
        right.write_bytes(b"\n".join(lines) + b"\n")
        _run(["diff", str(left), str(right)], capsys, right)
        _run(["diff", "--tier", "2", str(right), str(left)], capsys, right)
        _run(["report", str(left), str(right), str(left)], capsys, right)


@SETTINGS
@given(data=st.data())
def test_cut_or_garbled_bytes(capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        left, right = _pair(Path(tmp))
        content = right.read_bytes()
        offset = data.draw(st.integers(0, len(content)))
        garbage = data.draw(st.binary(max_size=20))
        right.write_bytes(content[:offset] + garbage + content[offset + data.draw(st.integers(0, 30)) :])
        _run(["diff", str(left), str(right)], capsys, right)
        _run(["report", str(right), str(left), str(left)], capsys, right)

"""The committed JSON Schema agrees with the record types and with the validator."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings

from detllm import Footer, Header, Row, write_trace
from detllm._schema import trace_schema

from .conftest import ROOT
from .property.strategies import traces

jsonschema = pytest.importorskip("jsonschema")

SCHEMA_FILE = ROOT / "formats" / "trace-v1.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def test_committed_schema_is_generated_from_the_records() -> None:
    assert SCHEMA == trace_schema(), "regenerate: python -m detllm._schema > formats/trace-v1.schema.json"


@pytest.mark.parametrize("record", [Header, Row, Footer])
def test_schema_fields_are_the_record_fields(record: type[msgspec.Struct]) -> None:
    definition = SCHEMA["$defs"][record.__name__]
    assert list(definition["properties"]) == ["record", *record.__struct_fields__]
    required = {"record", *(f for f, d in zip(record.__struct_fields__, _defaults(record)) if d is _REQUIRED)}
    if record is Header:
        required |= {"format", "version"}
    assert set(definition["required"]) == required


_REQUIRED = object()


def _defaults(record: type[msgspec.Struct]) -> list[object]:
    info = msgspec.inspect.type_info(record)
    return [_REQUIRED if f.required else f.default for f in info.fields]  # type: ignore[attr-defined]


def _lines(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("path", sorted((ROOT / "fixtures" / "traces" / "valid").glob("*.jsonl")), ids=lambda p: p.name)
def test_valid_fixtures_satisfy_the_schema(path: Path) -> None:
    for number, line in enumerate(_lines(path), start=1):
        errors = list(VALIDATOR.iter_errors(line))
        assert not errors, f"{path.name}:{number}: {errors[0].message}"


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("wrong-type", 2),
        ("negative-token-id", 2),
        ("missing-field", 2),
        ("major-version", 1),
        ("not-a-trace", 1),
        ("positive-logprob", 2),
        ("bad-created-at", 1),
    ],
)
def test_schema_rejects_what_the_validator_rejects(name: str, line: int) -> None:
    lines = _lines(ROOT / "fixtures" / "traces" / "invalid" / f"{name}.jsonl")
    assert not VALIDATOR.is_valid(lines[line - 1])
    assert all(VALIDATOR.is_valid(other) for i, other in enumerate(lines, start=1) if i != line)


@settings(max_examples=60, deadline=None)
@given(traces())
def test_written_traces_satisfy_the_schema(trace) -> None:  # type: ignore[no-untyped-def]
    header, rows = trace
    with tempfile.TemporaryDirectory() as tmp:
        path = write_trace(Path(tmp) / "t.jsonl", header, rows)
        for line in _lines(path):
            assert VALIDATOR.is_valid(line)

"""A check directory's versioned JSON files besides run_config.json (sweep.json,
replays/replays.json) are read by one reader: a damaged one is one located line, exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from detllm.cli import main

from tests.diff._sweep_report import sweep_check_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def swept(tmp_path: Path) -> Path:
    directory = tmp_path / "check"
    sweep_check_report(directory)
    (directory / "report.json").unlink()  # judged again from its files, sweep.json included
    return directory


def _damage(path: Path, edit: object) -> None:
    if isinstance(edit, bytes):
        path.write_bytes(edit)
        return
    document = json.loads(path.read_text())
    edit(document)  # type: ignore[operator]
    path.write_text(json.dumps(document, indent=2))


CASES = [
    (lambda d: d.update(version="2.0"), "1: version: major version 2 is not supported (this detLLM reads 1.x run directories)"),
    (lambda d: d.update(version=1), "1: version: expected 'MAJOR.MINOR', got 1"),
    (lambda d: d.update(format="detllm.run_config"),
     "1: format: expected 'detllm.sweep', got 'detllm.run_config': not a detLLM sweep.json"),
    (lambda d: d.pop("baseline"), "1: baseline: missing required field"),
    (lambda d: d["variants"][0].update(status=3), "1: variants[0].status: expected str, got int"),
    (b'{"format": "detllm.sweep",\n "version": "1.0",\n "mode": ', "3: -: not valid JSON ("),
    (b'{"format": "detllm.sweep",\n "mode": "caf\xe9"}', "2: -: not valid UTF-8"),
    (b"[1, 2]", "1: -: not a detLLM sweep.json (a JSON object is required)"),
]


@pytest.mark.parametrize(("edit", "message"), CASES)
def test_a_damaged_sweep_record_is_one_located_line(
    swept: Path, edit: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = swept / "sweep.json"
    _damage(path, edit)
    assert main(["report", str(swept)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"detllm: {path}:{message}"), lines


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="detllm.sweep"),
         "1: format: expected 'detllm.determinism', got 'detllm.sweep': not a detLLM determinism_applied.json"),
        (lambda d: d.update(version="3.1"), "1: version: major version 3 is not supported"),
        (lambda d: d.update(mode="sometimes"), "1: mode: invalid enum value 'sometimes'"),
        (lambda d: d.pop("complete"), "1: complete: missing required field"),
        (b"{\n", "2: -: not valid JSON ("),
    ],
)
def test_a_damaged_determinism_record_is_one_located_line(
    swept: Path, edit: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = swept / "determinism_applied.json"
    _damage(path, edit)
    assert main(["report", str(swept)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"detllm: {path}:{message}"), lines


def test_a_newer_minor_sweep_record_is_read(swept: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _damage(swept / "sweep.json", lambda d: d.update(version="1.7", added_later={"x": 1}))
    code = main(["report", str(swept), "--json"])
    assert code in (0, 1)
    assert len(json.loads(capsys.readouterr().out)["sweep"]["variants"]) == 3


def test_the_check_files_schema_is_generated_from_the_records() -> None:
    from detllm.report._schema import check_files_schema

    path = ROOT / "formats" / "check-files.schema.json"
    expected = json.dumps(check_files_schema(), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("DETLLM_UPDATE_GOLDENS") == "1":
        path.write_text(expected)
    assert path.read_text() == expected


def test_a_written_sweep_record_follows_the_schema_and_a_damaged_one_does_not(swept: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "formats" / "check-files.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    document = json.loads((swept / "sweep.json").read_text())
    assert list(validator.iter_errors(document)) == []
    document["variants"][0]["status"] = 3
    assert list(validator.iter_errors(document)) != []

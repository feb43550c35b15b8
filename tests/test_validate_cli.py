"""``detllm validate`` on the committed fixtures and on the command line's edge cases."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from detllm.cli import main

from .conftest import ROOT

FIXTURES = ROOT / "fixtures" / "traces"
INVALID = sorted(p for p in (FIXTURES / "invalid").iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
VALID = sorted((FIXTURES / "valid").iterdir())


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_each_invalid_fixture_gives_its_exact_message(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected_file = path.parent / (path.name.split(".jsonl")[0] + ".expected")
    assert main(["validate", "--quiet", _relative(path)]) == 1
    out, _ = capsys.readouterr()
    assert out == expected_file.read_text()
    assert out  # every invalid fixture produces at least one finding


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_each_valid_fixture_is_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", _relative(path)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("1 of 1 trace files valid\n")


def test_every_failure_mode_has_its_expected_message() -> None:
    expected = sorted(p.name.split(".expected")[0] for p in (FIXTURES / "invalid").glob("*.expected"))
    assert expected == sorted(p.name.split(".jsonl")[0] for p in INVALID)
    assert len(expected) >= 25


def test_fixtures_are_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, data in module.valid().items():
        assert (FIXTURES / "valid" / name).read_bytes() == data, name
    assert gzip.decompress((FIXTURES / "valid" / "minimal.jsonl.gz").read_bytes()) == module.valid()["minimal.jsonl"]
    for name, data in module.invalid().items():
        suffix = ".jsonl.gz" if name.endswith("gzip") else ".jsonl"
        assert (FIXTURES / "invalid" / (name + suffix)).read_bytes() == data, name


def test_newer_minor_version_warns_but_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "fixtures/traces/valid/newer-minor.jsonl"]) == 0
    _, err = capsys.readouterr()
    assert "warning: fixtures/traces/valid/newer-minor.jsonl: trace version 1.3 is newer than 1.2" in err


def test_directory_expands_to_its_traces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "fixtures/traces/valid"]) == 0
    _, err = capsys.readouterr()
    assert err.endswith(f"{len(VALID)} of {len(VALID)} trace files valid\n")
    assert main(["validate", "--quiet", "fixtures/traces"]) == 1


def test_missing_file_is_trouble_not_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", "fixtures/traces/valid/minimal.jsonl", "no/such/trace.jsonl"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "detllm: no/such/trace.jsonl: No such file or directory\n" in err


def test_directory_without_traces_is_trouble(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert f"{tmp_path}: no trace files" in capsys.readouterr().err


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["validate", "--json", "fixtures/traces/valid/minimal.jsonl", "fixtures/traces/invalid/logprobs-length.jsonl"]
    )
    assert code == 1
    document = json.loads(capsys.readouterr().out)
    assert document["format"] == "detllm.validation"
    assert document["valid"] is False
    first, second = document["files"]
    assert first == {
        "path": "fixtures/traces/valid/minimal.jsonl",
        "valid": True,
        "version": "1.0",
        "rows": 3,
        "complete": True,
        "findings": [],
        "warnings": [],
    }
    assert second["findings"] == [{"line": 3, "field": "logprobs", "problem": "has 5 entries but token_ids has 6"}]


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2

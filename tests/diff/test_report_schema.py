"""formats/report-v1.schema.json: up to date, and every report detLLM writes follows it."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest

from detllm.diff import aggregate_traces, diff_traces
from detllm.diff.model import CLASSIFICATIONS, STATUSES
from detllm.report import write_report_dir
from detllm.report._schema import report_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "formats" / "report-v1.schema.json"
FIXTURES = ROOT / "fixtures" / "diff"


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_file_is_generated_from_the_report_types() -> None:
    expected = json.dumps(report_schema(), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("DETLLM_UPDATE_GOLDENS") == "1":
        SCHEMA.write_text(expected)
    assert SCHEMA.read_text() == expected


def test_stable_names_are_in_the_schema() -> None:
    defs = json.loads(SCHEMA.read_text())["$defs"]
    assert sorted(defs["PromptResult"]["properties"]["status"]["enum"]) == sorted(STATUSES)
    assert sorted(defs["PromptResult"]["properties"]["classification"]["enum"]) == sorted(CLASSIFICATIONS)


@pytest.mark.parametrize("golden", sorted(FIXTURES.glob("*/report.json")), ids=lambda p: p.parent.name)
def test_golden_reports_validate(golden: Path) -> None:
    validator().validate(json.loads(golden.read_text()))


def test_written_report_directories_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    check = validator()
    for name, report in (
        ("diff", diff_traces("fixtures/diff/cross_backend/left.jsonl", "fixtures/diff/cross_backend/right.jsonl.gz")),
        ("aggregate", aggregate_traces(["fixtures/diff/aggregate_batch_sweep/runs"])),
    ):
        out = write_report_dir(report, tmp_path / name)
        for path in (out / "report.json", out / "diffs" / "first_divergence.json"):
            data = json.loads(path.read_text())
            check.validate(data)
            assert data["format"] == "detllm.report" and data["version"] == "1.2"


def test_the_schema_rejects_what_detllm_would_never_write() -> None:
    check = validator()
    good = json.loads((FIXTURES / "near_tie_flip" / "report.json").read_text())
    check.validate(good)
    broken = []
    for mutate in (
        lambda d: d["verdict"].__setitem__("tier1", "yes"),
        lambda d: d["prompts"][1].__setitem__("classification", "probably_fine"),
        lambda d: d["prompts"][1]["divergence"].pop("index"),
        lambda d: d.__setitem__("version", "2.0"),
        lambda d: d.__setitem__("kind", "other"),
    ):
        data = copy.deepcopy(good)
        mutate(data)
        broken.append(not check.is_valid(data))
    assert broken == [True] * 5

"""The run directory format: its one reader, its records and its committed JSON Schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest

from detllm._schema import run_config_schema
from detllm.cli import main
from detllm.errors import InputError, RunDirectoryError
from detllm.rundir import (
    RUN_CONFIG_FILE,
    prompt_record,
    CheckPlan,
    PlannedRun,
    Prompt,
    RunConfigDocument,
    RunSettings,
    plan_runs,
    prompt_lines,
    read_run_config,
    run_config_document,
)

from .conftest import ROOT

jsonschema = pytest.importorskip("jsonschema")

SCHEMA_FILE = ROOT / "formats" / "run-directory.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CHECK = ROOT / "fixtures" / "recorded" / "check-flip"
RECORDED = sorted(ROOT.glob("fixtures/**/run_config.json"))


def test_committed_schema_is_generated_from_the_records() -> None:
    assert SCHEMA == run_config_schema(), (
        "regenerate: python -m detllm._schema run-directory > formats/run-directory.schema.json"
    )


@pytest.mark.parametrize("record", [RunConfigDocument, RunSettings, CheckPlan, PlannedRun])
def test_schema_fields_are_the_record_fields(record: type[msgspec.Struct]) -> None:
    assert list(SCHEMA["$defs"][record.__name__]["properties"]) == list(record.__struct_fields__)


def test_the_recorded_directories_follow_the_schema_and_are_read() -> None:
    assert RECORDED  # else the loop below proves nothing
    for path in RECORDED:
        document = json.loads(path.read_text())
        assert not [e.message for e in VALIDATOR.iter_errors(document)], path
        config = read_run_config(path.parent)
        assert [p.id for p in config.prompts] == [p["id"] for p in document["prompts"]]
        assert [prompt_record(p) for p in config.prompts] == document["prompts"]
        # The prompts are read once, into their records; every other member as written.
        assert config.document == {key: value for key, value in document.items() if key != "prompts"}


def test_what_run_writes_is_what_the_reader_reads(tmp_path: Path) -> None:
    settings = RunSettings(model="tiny", seed=3, options={"attn": "eager"}, redact=["paths"])
    prompts = [Prompt(id="a", text="caf\u00e9"), Prompt(id="b", token_ids=(1, 2, 3))]
    document = run_config_document(settings, prompts, ["detllm", "run", "--model", "tiny"])
    assert not [e.message for e in VALIDATOR.iter_errors(document)]
    (tmp_path / RUN_CONFIG_FILE).write_text(json.dumps(document))
    config = read_run_config(tmp_path)
    assert (config.settings, config.prompts, config.command, config.check) == (
        settings, prompts, ["detllm", "run", "--model", "tiny"], None
    )
    assert prompt_lines(prompts) == b'{"id":"a","prompt":"caf\xc3\xa9"}\n{"id":"b","input_ids":[1,2,3]}\n'


def test_a_check_plan_is_read_back() -> None:
    config = read_run_config(CHECK)
    assert config.check is not None
    assert config.check.traces == plan_runs(2, [1, 4], ["reversed", "shuffled:1"])


def _damaged(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path / "check"
    shutil.copytree(CHECK, directory)
    document = json.loads((directory / RUN_CONFIG_FILE).read_text())
    change(document)
    (directory / RUN_CONFIG_FILE).write_text(json.dumps(document))
    return directory


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version="2.0"),
         "1: version: major version 2 is not supported (this detLLM reads 1.x run directories)"),
        (lambda d: d.update(version="1"), "1: version: expected 'MAJOR.MINOR', got '1'"),
        (lambda d: d.pop("version"), "1: version: expected 'MAJOR.MINOR', got None"),
        (lambda d: d.update(format="detllm.report"),
         "1: format: expected 'detllm.run_config', got 'detllm.report': not a detLLM run_config.json"),
        (lambda d: d["check"].update(runs="two"), "1: check.runs: expected int, got str"),
        (lambda d: d["config"].pop("model"), "1: config.model: missing required field"),
        (lambda d: d["prompts"][1].update(input_ids=[1]), "1: prompts[1]: needs exactly one of prompt and input_ids"),
        (lambda d: d["prompts"][2].pop("id"), "1: prompts[2].id: missing required field"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
def test_a_bad_run_config_names_the_file_and_the_field(tmp_path: Path, change, message: str, stream: bool) -> None:  # type: ignore[no-untyped-def]
    directory = _damaged(tmp_path, change)
    with pytest.raises(RunDirectoryError) as error:
        read_run_config(directory, stream_prompts=stream)
    assert str(error.value) == f"{directory / RUN_CONFIG_FILE}:{message}"


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y", "input_ids": [1]}, {"id": 3, "prompt": "z"}],
         "1: prompts[2].id: expected str, got int"),  # a type error anywhere comes before the shape
        ([{"id": "a", "prompt": "x", "later": {"nested": [1]}}, {"id": "b"}],
         "1: prompts[1]: needs exactly one of prompt and input_ids"),
        ([{"id": "a", "prompt": "x"}, 5], "1: prompts[1]: expected object, got int"),
        ([{"id": str(i), "prompt": "x"} for i in range(4100)] + [{"id": 1}], "1: prompts[4100].id: expected str, got int"),
        ({"id": "a"}, "1: -: expected array, got object"),  # as this reader has always worded it
    ],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
def test_bad_prompts_are_refused_alike_streamed_or_not(tmp_path: Path, prompts: object, message: str, stream: bool) -> None:
    directory = _damaged(tmp_path, lambda d: d.update(prompts=prompts))
    with pytest.raises(RunDirectoryError) as error:
        read_run_config(directory, stream_prompts=stream)
    assert str(error.value) == f"{directory / RUN_CONFIG_FILE}:{message}"


@pytest.mark.parametrize(
    "prompts",
    [
        [],
        [{"id": "a", "prompt": "x"}, {"id": "b", "input_ids": [1, 2]}],
        [{"id": "q\"{}\\", "prompt": "br}ace{s \"and\" \\ é 猫 \n"}, {"prompt": "{", "id": "[", "extra": [1, {"x": "}"}]}],
        [{"id": str(i), "prompt": "p" * (i % 7)} for i in range(9000)],
        [{"id": str(i), "prompt": "p", **({"later": {"n": i}} if i == 5000 else {})} for i in range(6000)],
    ],
    ids=["empty", "both-kinds", "tricky-text", "many", "nested-late"],
)
def test_streamed_prompts_are_the_prompts(tmp_path: Path, prompts: list[dict[str, object]]) -> None:
    directory = _damaged(tmp_path, lambda d: d.update(prompts=prompts))
    whole = read_run_config(directory)
    streamed = read_run_config(directory, stream_prompts=True)
    assert len(streamed.prompts) == len(whole.prompts) == len(prompts)
    assert list(streamed.prompts) == whole.prompts == list(streamed.prompts)
    assert [p.id for p in whole.prompts] == [p["id"] for p in prompts]
    spaced = directory / RUN_CONFIG_FILE
    spaced.write_text(json.dumps(json.loads(spaced.read_text()), indent=3))
    assert list(read_run_config(directory, stream_prompts=True).prompts) == whole.prompts


def test_a_newer_minor_version_and_unknown_members_are_read(tmp_path: Path) -> None:
    directory = _damaged(tmp_path, lambda d: d.update(version="1.9", later={"x": 1}))
    assert read_run_config(directory).check is not None


def test_not_json_and_no_file(tmp_path: Path) -> None:
    (tmp_path / RUN_CONFIG_FILE).write_text("{\n  nope")
    with pytest.raises(RunDirectoryError, match=r"run_config.json:2: -: not valid JSON \(.*\)$"):
        read_run_config(tmp_path)
    with pytest.raises(InputError) as error:
        read_run_config(tmp_path / "missing")
    assert str(error.value) == f"{tmp_path / 'missing' / RUN_CONFIG_FILE}: no such file (give a run or check directory)"


@pytest.mark.parametrize("command", ["report", "pack"])
def test_report_and_pack_refuse_another_major_version_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    directory = _damaged(tmp_path, lambda d: d.update(version="2.0"))
    (directory / "report.json").unlink()  # else report renders the saved report
    argv = [command, str(directory)] + (["--out", str(tmp_path / "pack")] if command == "pack" else [])
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"detllm: {directory / RUN_CONFIG_FILE}:1: version: major version 2 is not supported "
        "(this detLLM reads 1.x run directories)\n"
    )
    assert not (tmp_path / "pack").exists()

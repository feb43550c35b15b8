"""A check directory that did not finish: validate, report and pack say so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from detllm.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "fixtures" / "recorded" / "check-flip"


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """The recorded check as if it had crashed while recording bs4-in-order."""
    base = tmp_path / "crashed"
    shutil.copytree(CHECK, base)
    for name in ("report.json", "report.txt", "report.md", "README.md"):
        (base / name).unlink()
    shutil.rmtree(base / "diffs")
    traces = base / "traces"
    lines = (traces / "bs4-in-order.jsonl").read_bytes().splitlines(keepends=True)
    (traces / "bs4-in-order.jsonl.partial").write_bytes(b"".join(lines[:3]))
    for name in ("bs4-in-order.jsonl", "bs4-reversed.jsonl", "bs4-shuffled-1.jsonl"):
        (traces / name).unlink()
    return base


def test_validate_reports_a_partial_trace(crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(crashed), "-q"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{crashed}/traces/bs4-in-order.jsonl.partial:4: footer: missing: the trace ends after 2 rows without its "
        "footer (the run that wrote it did not finish, or the file was cut)"
    ]


def test_report_of_a_crashed_check_says_incomplete(crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(crashed)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"detllm: {crashed}: the check is incomplete: bs4-in-order did not finish (traces/bs4-in-order.jsonl.partial); "
        "bs4-reversed, bs4-shuffled-1 were not recorded (pass --allow-incomplete to report on the complete rows)\n"
    )


def test_report_of_a_directory_of_traces_with_a_partial_one_says_incomplete(
    crashed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(crashed / "traces")]) == 2
    assert "bs4-in-order.jsonl.partial: a trace that did not finish" in capsys.readouterr().err


def test_allow_incomplete_reports_on_the_complete_rows(crashed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["report", str(crashed), "--allow-incomplete", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in report["runs"]] == ["bs1-run0", "bs1-run1", "bs4-in-order"]
    assert report["runs"][2]["trace"]["path"] == "traces/bs4-in-order.jsonl.partial"
    assert report["runs"][2]["trace"]["complete"] is False
    assert report["notes"][0] == (
        "The check is incomplete: bs4-in-order did not finish (traces/bs4-in-order.jsonl.partial); bs4-reversed, "
        "bs4-shuffled-1 were not recorded. This report covers the complete rows of 3 traces of 5."
    )


def test_pack_refuses_a_crashed_check_unless_allowed(crashed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pack", str(crashed), "--out", str(tmp_path / "no"), "-q"]) == 2
    assert "the check is incomplete" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    assert main(["pack", str(crashed), "--out", str(tmp_path / "pack"), "--all", "--allow-incomplete"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'pack'}: The check is incomplete: bs4-in-order did not finish")
    assert sorted(p.name for p in (tmp_path / "pack" / "traces").iterdir()) == ["bs1-run0.jsonl", "bs1-run1.jsonl", "bs4-in-order.jsonl"]
    assert main(["validate", str(tmp_path / "pack" / "traces"), "-q"]) == 0
    assert "The check is incomplete" in (tmp_path / "pack" / "README.md").read_text()
    assert main(["report", str(tmp_path / "pack"), "-q"]) in (0, 1)

"""Every malformed trace gets one line naming file, line and field from diff and report."""

from __future__ import annotations

from pathlib import Path

import pytest

from detllm.cli import main

ROOT = Path(__file__).resolve().parents[2]

INVALID = sorted(p for p in (ROOT / "fixtures" / "traces" / "invalid").iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
VALID = ROOT / "fixtures" / "traces" / "valid" / "minimal.jsonl"


def _expected_first_finding(path: Path) -> str:
    expected = path.parent / (path.name.split(".jsonl")[0] + ".expected")
    return expected.read_text().splitlines()[0]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
@pytest.mark.parametrize("command", ["diff-left", "diff-right", "report"])
def test_invalid_trace_is_one_line_and_exit_2(
    path: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    bad, good = str(path.relative_to(ROOT)), str(VALID.relative_to(ROOT))
    argv = {
        "diff-left": ["diff", bad, good],
        "diff-right": ["diff", good, bad],
        "report": ["report", bad, good, good],
    }[command]
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"detllm: {bad}:"), lines[0]
    assert lines[0] == "detllm: " + _expected_first_finding(path)

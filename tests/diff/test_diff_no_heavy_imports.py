"""diff, report, validate and pack run without importing torch, transformers or vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "vllm")

SCRIPT = """
import json, sys
from detllm.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"codes": codes, "heavy": heavy, "detllm": "detllm.diff" in sys.modules}}))
"""


def run_commands(tmp_path: Path, prelude: str = "") -> dict[str, object]:
    fixtures = ROOT / "fixtures" / "diff"
    commands = [
        ["diff", str(fixtures / "near_tie_flip" / "left.jsonl"), str(fixtures / "near_tie_flip" / "right.jsonl"), "-q", "--out", str(tmp_path / "out")],
        ["report", str(tmp_path / "out"), "-q"],
        ["report", str(fixtures / "aggregate_batch_sweep" / "runs"), "-q"],
        ["validate", "-q", str(fixtures / "identical" / "left.jsonl")],
        ["diff", str(ROOT / "fixtures" / "recorded" / "replay-bf16" / "original.jsonl"),
         str(ROOT / "fixtures" / "recorded" / "replay-bf16" / "replay.jsonl"), "-q", "--out", str(tmp_path / "replay")],
        ["report", str(ROOT / "fixtures" / "recorded" / "check-flip"), "-q"],
        ["pack", str(ROOT / "fixtures" / "recorded" / "check-flip"), "--out", str(tmp_path / "pack"), "-q"],
    ]
    script = prelude + SCRIPT.format(heavy=set(HEAVY))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_diff_report_validate_pack_import_nothing_heavy(tmp_path: Path) -> None:
    result = run_commands(tmp_path)
    assert result["codes"] == [1, 1, 1, 0, 1, 1, 0]
    assert result["detllm"] is True
    assert result["heavy"] == []


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    # The same probe, with a stand-in module named like a heavy one imported first.
    stub = tmp_path / "stub" / "vllm"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    prelude = f"import sys; sys.path.insert(0, {str(stub.parent)!r}); import vllm\n"
    assert run_commands(tmp_path, prelude)["heavy"] == ["vllm"]

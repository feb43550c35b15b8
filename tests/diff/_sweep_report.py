"""A check report with an engine-setting sweep, built offline from the recorded check-flip
directory and a hand-written ``sweep.json`` (its variants point at that check's traces)."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from detllm.diff import CheckReport, rebuild_check_report
from detllm.diff._sweep_model import PrefixCounters, SweepRecord, SweepTrace, SweepVariantRecord

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "fixtures" / "recorded" / "check-flip"
HOSTILE_NAME = "attn=<script>window.__pwned=1</script>\u202e"


def sweep_check_report(directory: Path) -> CheckReport:
    """check-flip with three variants: one that changes tokens (its batch-size 4 trace), one
    not run (with a hostile name and reason), and a prefix-cache probe (cold and warm)."""
    shutil.copytree(CHECK, directory)
    record = SweepRecord(
        mode="one-at-a-time",
        baseline="traces/bs1-run0.jsonl",
        variants=[
            SweepVariantRecord(name="dtype=bfloat16", settings={"dtype": "bfloat16"}, changes={"dtype": "bfloat16"},
                               status="run", applied={"dtype": "bfloat16"},
                               traces=[SweepTrace(name="bs4-in-order", path="traces/bs4-in-order.jsonl", role="run")]),
            SweepVariantRecord(name=HOSTILE_NAME, settings={"attn": "x"}, changes={}, status="not_run",
                               reason="the engine refused: <img src=x onerror=alert(1)>"),
            SweepVariantRecord(name="enable_prefix_caching=true", settings={"enable_prefix_caching": True},
                               changes={"options": {"enable_prefix_caching": True}}, status="run",
                               applied={"enable_prefix_caching": True}, fresh_process=False,
                               traces=[SweepTrace(name="bs1-run1", path="traces/bs1-run1.jsonl", role="cold"),
                                       SweepTrace(name="bs4-reversed", path="traces/bs4-reversed.jsonl", role="warm")],
                               prefix_cache=PrefixCounters(cold={"p1": 0}, warm={"p1": 16}, block_size=16)),
        ],
    )
    (directory / "sweep.json").write_bytes(msgspec.json.encode(record))
    return rebuild_check_report(directory)

"""``detllm pack`` of a check with an engine-setting sweep keeps the sweep: ``sweep.json``,
each variant's traces cut to the kept prompts, the prompts only a variant changes, and the
``--sweep`` arguments in the command that runs it again."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import msgspec

from detllm import open_trace
from detllm.diff import rebuild_check_report
from detllm.diff.model import SweepRecord, SweepTrace, SweepVariantRecord
from detllm.report._pack import make_pack
from tests.diff._sweep_report import sweep_check_report
from tests.diff._traces import flip_at, write


def _with_a_variant_of_its_own(directory: Path) -> None:
    """Add a variant whose trace is a file of its own, changing only p7's tokens (p7 drifts
    in its logprobs between the check's runs but keeps its tokens)."""
    with open_trace(directory / "traces" / "bs1-run0.jsonl") as reader:
        header, rows = reader.header, list(reader)
    write(directory / "traces" / "sweep-threads-1.jsonl",
          [flip_at(r, 2) if r.prompt_id == "p7" else r for r in rows], header)
    record = msgspec.json.decode((directory / "sweep.json").read_bytes(), type=SweepRecord)
    own = SweepVariantRecord(name="threads=1", settings={"threads": 1}, changes={"threads": 1}, status="run",
                             applied={"threads": 1},
                             traces=[SweepTrace(name="threads-1", path="traces/sweep-threads-1.jsonl", role="run")])
    record = msgspec.structs.replace(record, variants=[*record.variants, own])
    (directory / "sweep.json").write_bytes(msgspec.json.encode(record))
    (directory / "report.json").unlink()


def test_a_pack_keeps_the_sweep_and_judges_it_again(tmp_path: Path) -> None:
    check = tmp_path / "check"
    sweep_check_report(check)
    _with_a_variant_of_its_own(check)
    original = rebuild_check_report(check)
    result = make_pack(check, tmp_path / "pack", tier=1)
    pack = tmp_path / "pack"
    # p7 diverges only under threads=1: kept all the same, after the check's own findings.
    assert result.prompts[-1] == "p7" and "p7" not in result.prompts[:-1]
    with open_trace(pack / "traces" / "sweep-threads-1.jsonl") as reader:
        assert sorted(r.prompt_id for r in reader) == sorted(result.prompts)
    packed = result.report
    assert packed.sweep is not None and original.sweep is not None
    assert [(v.name, v.status, v.stable) for v in packed.sweep.variants] == [
        (v.name, v.status, v.stable) for v in original.sweep.variants]
    changed = {v.name: v.comparisons[0].divergent for v in packed.sweep.variants if v.comparisons}
    assert changed["threads=1"] == ["p7"]
    probe = json.loads((pack / "sweep.json").read_text())["variants"][2]["prefix_cache"]
    assert set(probe["cold"]) <= set(result.prompts)
    # The command runs the same sweep again.
    assert shlex.join(["--sweep", "dtype=bfloat16"]) in shlex.join(result.command)
    assert "--sweep threads=1" in shlex.join(result.command)
    assert "sweep.json" in (pack / "README.md").read_text()

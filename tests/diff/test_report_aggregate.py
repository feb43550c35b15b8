"""aggregate_traces: completions, majorities, splits and positions across many runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detllm.diff import DiffOptions, aggregate_traces
from detllm.errors import TraceFormatError, UsageError
from detllm.diff.model import AggregateReport, Branch, Token
from detllm.report import render_text
from detllm.diff._aggregate import split_text
from detllm.trace import Batch
from tests.diff._traces import drift, flip_at, header, rows, write


def make_runs(tmp_path: Path) -> list[Path]:
    """Seven runs of three prompts: runs 5 and 6 flip p1 at token 4; run 6 drifts p2."""
    data = rows(3, length=10)
    paths = []
    for run in range(7):
        current = list(data)
        if run in (5, 6):
            current[1] = flip_at(data[1], 4)
        if run == 6:
            current[2] = drift(data[2], -1e-6)
        head = header(created_at=f"2026-11-28T10:0{run}:00Z", batch=Batch(size=1 if run < 4 else 4))
        paths.append(write(tmp_path / f"run-{run}.jsonl", current, head))
    return paths


def test_completions_majority_and_split(tmp_path: Path) -> None:
    report = aggregate_traces(make_runs(tmp_path))
    by_id = {p.prompt_id: p for p in report.prompts}
    p0, p1, p2 = by_id["p0"], by_id["p1"], by_id["p2"]
    assert (p0.completions, p0.majority_runs, p0.classification, p0.tier1) == (1, 7, "identical", True)
    assert (p1.completions, p1.majority_runs, p1.tier1) == (2, 5, False)
    assert p1.variants[0].runs == [0, 1, 2, 3, 4] and p1.variants[1].runs == [5, 6]
    assert p1.variants[1].first_divergence == 4
    assert p1.split is not None and p1.split.index == 4
    assert [b.runs for b in p1.split.branches] == [5, 2]
    assert p1.split.text.startswith("identical for 4 tokens, then 5 runs say ")
    assert (p2.completions, p2.logprob_groups, p2.classification, p2.tier2) == (1, 2, "logprob_drift", False)
    assert report.summary.runs_agreeing == 5
    assert [(p.index, p.count) for p in report.summary.divergence_positions] == [(4, 2)]
    assert report.setup.attribution.cause == "batch_dependence"
    assert [v.field for v in report.setup.varying] == ["created_at", "batch.size"]
    assert report.exit_code() == 1


def test_identical_runs_pass(tmp_path: Path) -> None:
    data = rows(2)
    paths = [write(tmp_path / f"r{i}.jsonl", data, header(created_at=f"2026-11-28T10:0{i}:00Z")) for i in range(3)]
    report = aggregate_traces(paths, DiffOptions(tier=2))
    assert report.classification == "identical"
    assert report.exit_code() == 0
    assert report.summary.tier1_stable == report.summary.tier2_stable == 2


def test_atol_merges_logprob_vectors(tmp_path: Path) -> None:
    data = rows(1)
    paths = [write(tmp_path / f"r{i}.jsonl", [drift(data[0], -i * 1e-7)]) for i in range(3)]
    assert aggregate_traces(paths).prompts[0].logprob_groups == 3
    assert aggregate_traces(paths, DiffOptions(atol=1e-6)).prompts[0].logprob_groups == 1


def test_missing_prompts(tmp_path: Path) -> None:
    data = rows(3)
    paths = [write(tmp_path / "a.jsonl", data), write(tmp_path / "b.jsonl", data), write(tmp_path / "c.jsonl", data[:2])]
    report = aggregate_traces(paths)
    p2 = report.prompts[2]
    assert p2.missing == [2] and p2.classification == "unmatched" and not p2.tier1
    assert "missing from runs 2" in render_text(report)


def test_rows_that_part_late_or_arrive_late(tmp_path: Path) -> None:
    """Byte-identical rows are tracked compactly until a run differs or lacks them."""
    data = rows(4, length=8)
    runs = [list(data), list(data), list(data)]
    runs[2][1] = flip_at(data[1], 3)  # the same in runs 0 and 1, then parts
    runs[0] = [data[0], data[1], data[3]]  # p2 missing from run 0 only
    runs[2] = [runs[2][0], runs[2][1], runs[2][2], runs[2][3]]
    paths = [write(tmp_path / f"r{i}.jsonl", current, header(created_at=f"2026-11-28T10:0{i}:00Z")) for i, current in enumerate(runs)]
    report = aggregate_traces(paths)
    by_id = {p.prompt_id: p for p in report.prompts}
    assert [p.prompt_id for p in report.prompts] == ["p0", "p1", "p3", "p2"]
    assert by_id["p1"].variants[0].runs == [0, 1] and by_id["p1"].variants[1].runs == [2]
    assert by_id["p1"].variants[1].first_divergence == 3
    assert by_id["p2"].missing == [0] and by_id["p2"].variants[0].runs == [1, 2]
    assert by_id["p0"].variants[0].runs == [0, 1, 2] and by_id["p0"].variants[0].tokens == 8
    assert report.summary.tier1_stable == 2 and report.summary.runs_agreeing == 1
    assert list(report.prompts) == report.prompts[:] and report.prompts == AggregateReport.from_dict(report.to_dict()).prompts


def test_duplicate_prompt_in_a_later_run(tmp_path: Path) -> None:
    data = rows(2)
    paths = [write(tmp_path / name, data) for name in ("a.jsonl", "b.jsonl", "c.jsonl")]
    lines = paths[2].read_bytes().splitlines(keepends=True)
    paths[2].write_bytes(b"".join([*lines[:-1], lines[2], lines[-1]]))  # p1 twice, before the footer
    with pytest.raises(TraceFormatError, match=r"c\.jsonl:4: prompt_id: duplicate prompt id 'p1'"):
        aggregate_traces(paths)


def test_round_trip(tmp_path: Path) -> None:
    report = aggregate_traces(make_runs(tmp_path))
    data = report.to_dict()
    assert (data["kind"], data["version"]) == ("aggregate", "1.2")
    assert AggregateReport.from_dict(json.loads(json.dumps(data))).to_dict() == data


def test_needs_two_traces(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs at least two traces, got 1"):
        aggregate_traces([write(tmp_path / "a.jsonl", rows(1))])


def test_split_wording() -> None:
    branches = [
        Branch(token=Token(id=1, text=" X"), runs=992, variants=[0]),
        Branch(token=Token(id=2, text=" Y"), runs=8, variants=[1]),
    ]
    assert split_text(102, branches) == 'identical for 102 tokens, then 992 runs say " X" and 8 say " Y"'
    stop = [branches[0], Branch(token=None, runs=3, variants=[2])]
    assert split_text(1, stop) == 'identical for 1 token, then 992 runs say " X" and 3 stop'


def test_cut_aggregate_reports_say_what_they_leave_out(tmp_path: Path) -> None:
    from detllm.report import render_markdown, render_text
    from tests.diff import _traces as t

    rows = t.rows(5, length=8)
    flipped = [t.flip_at(r, 3) if i < 3 else r for i, r in enumerate(rows)]
    paths = [t.write(tmp_path / f"r{i}.jsonl", data) for i, data in enumerate((rows, rows, flipped))]
    report = aggregate_traces(paths)
    text = render_text(report, max_prompts=1)
    assert "  ... and 3 more prompts, 1 of them with completions that split or missing from a run (all are in the JSON report)" in text
    assert "each with one completion" not in text
    assert "... and 2 more divergences against the majority (all are in the JSON report)" in text
    markdown = render_markdown(report, max_prompts=1)
    assert "| 1 more prompt whose completions split (all are in the JSON report) | | | | | |" in markdown
    assert "... and 2 more divergences against the majority (all are in the JSON report)." in markdown

"""The aggregate reads its traces in step: whatever order the traces list their prompts
in, and whether the duplicate check's ids stay in memory or go to disk, each
prompt's aggregate is what a plain, all-in-memory count of the rows gives, and a
repeated id is found wherever it falls."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detllm.diff import aggregate_traces
from detllm.diff import _aggregate, _seen
from detllm.diff.model import AggregateReport
from detllm.errors import TraceFormatError, UsageError
from detllm.report import render_markdown, render_text
from detllm.trace import Row
from tests.diff._traces import drift, flip_at, header, rows, write


def _variant(base: Row, kind: int) -> Row:
    """0: the row; 1: a token flipped; 2: logprobs drifted; 3: both."""
    out = base
    if kind & 1:
        out = flip_at(out, 2)
    if kind & 2:
        out = drift(out, -1e-6)
    return out


@st.composite
def _setups(draw: st.DrawFn) -> tuple[list[list[Row]], int]:
    prompts = draw(st.integers(1, 9))
    runs = draw(st.integers(2, 4))
    base = rows(prompts, seed=draw(st.integers(0, 3)), length=5)
    traces = []
    for _ in range(runs):
        kinds = [draw(st.sampled_from([0, 0, 0, 1, 2, 3])) for _ in range(prompts)]
        current = [_variant(r, k) for r, k in zip(base, kinds)]
        layout = draw(st.sampled_from(["same", "same", "shuffled", "fewer", "shifted"]))
        rng = random.Random(draw(st.integers(0, 1000)))
        if layout == "shuffled":
            rng.shuffle(current)
        elif layout == "fewer":
            current = [r for r in current if rng.random() < 0.7]
        elif layout == "shifted":
            current = current[1:] + current[:1]
        traces.append(current)
    limit = draw(st.sampled_from([_seen.ID_BUFFER, 1, 2, 3]))
    return traces, limit


def _expected(traces: list[list[Row]]) -> list[dict]:
    """Each prompt's aggregate counted the plain way, in report order."""
    place: dict[str, tuple[int, int]] = {}
    found: dict[str, dict[int, Row]] = {}
    for run, trace in enumerate(traces):
        for line, r in enumerate(trace):
            place.setdefault(r.prompt_id, (run, line))
            found.setdefault(r.prompt_id, {})[run] = r
    out = []
    for pid in sorted(place, key=place.__getitem__):
        by_run = found[pid]
        completions = Counter(tuple(r.token_ids) for r in by_run.values())
        ranked = sorted(completions, key=lambda t: (-completions[t], min(run for run, r in by_run.items() if tuple(r.token_ids) == t)))
        majority = ranked[0]
        majority_runs = sorted(run for run, r in by_run.items() if tuple(r.token_ids) == majority)
        vectors = {(tuple(by_run[run].logprobs), tuple(map(tuple, map(tuple, by_run[run].top_logprobs)))) for run in majority_runs}
        missing = [run for run in range(len(traces)) if run not in by_run]
        out.append(
            {
                "prompt_id": pid,
                "runs": len(by_run),
                "missing": missing,
                "completions": len(completions),
                "majority_runs": majority_runs,
                "shown_by": min(majority_runs),  # the lowest run's row stands for the majority
                "logprob_groups": len(vectors),
                "tier1": len(completions) == 1 and not missing,
            }
        )
    return out


def _seen_in(report) -> list[dict]:
    return [
        {
            "prompt_id": p.prompt_id,
            "runs": p.runs,
            "missing": p.missing,
            "completions": p.completions,
            "majority_runs": p.variants[0].runs,
            "shown_by": p.variants[0].run,
            "logprob_groups": p.logprob_groups,
            "tier1": p.tier1,
        }
        for p in report.prompts
    ]


def _write(tmp_path: Path, traces: list[list[Row]]) -> list[Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return [write(tmp_path / f"run-{i}.jsonl", t, header(created_at=f"2026-11-28T10:0{i}:00Z")) for i, t in enumerate(traces)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_setups())
def test_in_step_or_not_the_aggregate_is_the_plain_count(tmp_path_factory: pytest.TempPathFactory, setup) -> None:
    traces, limit = setup
    paths = _write(tmp_path_factory.mktemp("agg"), traces)
    expected = _expected(traces)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_aggregate, "ID_BUFFER", limit)  # small: the ids go to disk
        patch.setattr(_seen, "ID_BUFFER", limit)
        report = aggregate_traces(paths)
    assert _seen_in(report) == expected
    summary = report.summary
    assert summary.prompts == len(expected)
    assert summary.tier1_stable == sum(e["tier1"] for e in expected)
    assert sum(summary.classifications.values()) == len(expected)
    assert list(report.prompts) == report.prompts[:] == [report.prompts[i] for i in range(len(report.prompts))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_setups(), st.integers(0, 100), st.integers(0, 100))
def test_a_prompt_twice_in_one_trace_is_refused_wherever_it_falls(
    tmp_path_factory: pytest.TempPathFactory, setup, which: int, where: int
) -> None:
    traces, limit = setup
    run = which % len(traces)
    if not traces[run]:
        return
    repeated = traces[run][where % len(traces[run])]
    paths = _write(tmp_path_factory.mktemp("dup"), traces)
    lines = paths[run].read_bytes().splitlines(keepends=True)  # header, rows, footer
    line = lines[1 + where % len(traces[run])]
    at = 1 + (where + which) % len(traces[run]) + 1  # after its first copy or elsewhere, before the footer
    lines.insert(max(at, lines.index(line) + 1), line)
    paths[run].write_bytes(b"".join(lines))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_aggregate, "ID_BUFFER", limit)  # small: the ids go to disk
        patch.setattr(_seen, "ID_BUFFER", limit)
        with pytest.raises(TraceFormatError, match=f"duplicate prompt id '{repeated.prompt_id}'") as caught:
            aggregate_traces(paths)
    assert caught.value.path == str(paths[run])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_setups(), st.integers(1, 4))
def test_text_and_markdown_pick_the_same_prompts_streaming(tmp_path_factory: pytest.TempPathFactory, setup, max_prompts: int) -> None:
    """The renderers pick their prompts in one pass (the engine's sequence skips the prompts
    that are the same in every run); what they show is what sorting every prompt gives,
    and the same as for the report loaded back from JSON."""
    traces, _ = setup
    report = aggregate_traces(_write(tmp_path_factory.mktemp("render"), traces))
    loaded = AggregateReport.from_dict(report.to_dict())
    text = render_text(report, max_prompts=max_prompts)
    assert text == render_text(loaded, max_prompts=max_prompts)
    assert render_markdown(report, max_prompts=max_prompts) == render_markdown(loaded, max_prompts=max_prompts)
    prompts = list(report.prompts)
    table = sorted(prompts, key=lambda p: (p.completions == 1 and not p.missing, p.prompt_id))[: max_prompts * 2]
    table.sort(key=prompts.index)
    listed = [line.split()[0] for line in text.split("  (completions:")[0].split("classification\n", 1)[1].splitlines() if not line.startswith("  ...")]
    assert listed == [p.prompt_id for p in table]


def test_more_traces_than_open_files_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading in step opens every trace at once: past the hard limit on open files the
    aggregate says so (a usage error, exit 2), and under it the soft limit is raised."""
    import resource

    paths = _write(tmp_path, [rows(2), rows(2), rows(2)])
    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: raised.append(limits))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (16, 4096))
    aggregate_traces(paths)
    assert raised == [(3 + 64 + 64, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda which: (16, 32))
    with pytest.raises(UsageError, match="aggregating 3 traces reads them all at once, but this process may open only 32 files"):
        aggregate_traces(paths)

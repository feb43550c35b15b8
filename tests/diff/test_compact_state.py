"""The comparison's per-row state: the seen prompt ids and the results, kept compact."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from detllm.diff import DiffOptions, PromptResult, diff_traces
from detllm.diff import _parallel, _results
from detllm.diff._results import PromptResults
from detllm.diff._seen import SeenIds
from detllm.errors import TraceFormatError
from tests.diff._traces import flip_at, rows, write


def test_seen_ids_agree_with_a_set_past_several_growths() -> None:
    rng = random.Random(3)
    seen, reference = SeenIds(), set()
    for n in range(30_000):
        pid = f"p{rng.randrange(20_000)}" if n % 3 else f"q{n}"
        assert (pid in seen) == (pid in reference)
        assert seen.add(pid) == (pid not in reference)
        reference.add(pid)
    assert len(seen) == len(reference)
    assert all(p in seen for p in reference)
    assert "absent" not in seen and "" not in seen
    assert seen.add("") and "" in seen and not seen.add("")


def _with_duplicate(path: Path, source: Path, n: int) -> Path:
    """``source``'s rows, then its first row's prompt id once more."""
    lines = source.read_bytes().splitlines()
    body = lines[1:-1] + [lines[1]]
    digest = hashlib.sha256(b"".join(line + b"\n" for line in body)).hexdigest()
    footer = json.dumps({"record": "footer", "rows": n + 1, "digest": f"sha256:{digest}"}, separators=(",", ":"))
    path.write_bytes(b"\n".join([lines[0], *body, footer.encode()]) + b"\n")
    return path


@pytest.mark.parametrize("identical", [True, False])
def test_a_duplicate_after_thousands_of_prompts_is_found(tmp_path: Path, identical: bool) -> None:
    n = 5000  # more ids than a new table holds
    data = rows(n, length=2)
    a = write(tmp_path / "a.jsonl", data)
    if not identical:
        data = [flip_at(r, 1) if i % 7 == 0 else r for i, r in enumerate(data)]
    b = write(tmp_path / "b.jsonl", data)
    twice = _with_duplicate(tmp_path / "twice.jsonl", b, n)
    with pytest.raises(TraceFormatError, match=rf"twice.jsonl:{n + 2}: prompt_id: duplicate prompt id 'p0'"):
        diff_traces(a, twice)


def _result(i: int) -> PromptResult:
    return PromptResult(prompt_id=f"p{i}", status="identical", classification="identical", left_index=i, right_index=i)


@pytest.mark.parametrize("merge_runs", [2, 4096])
def test_results_in_runs_out_of_order_come_back_in_key_order(monkeypatch: pytest.MonkeyPatch, merge_runs: int) -> None:
    # As from a worker: batches analysed elsewhere arrive after later rows.
    monkeypatch.setattr(_results, "_MERGE_RUNS", merge_runs)
    order = [*range(0, 10), *range(20, 30), *range(10, 20), *range(35, 40), *range(30, 35), 1 << 48]
    results = PromptResults()
    for key in order:
        results.append(_result(key if key < 1 << 48 else 99), key)
    results.finish()
    expected = [f"p{k}" for k in range(40)] + ["p99"]
    assert [r.prompt_id for r in results] == expected
    assert results[10].prompt_id == "p10" and results[-1].prompt_id == "p99"
    assert [r.prompt_id for r in results[28:32]] == ["p28", "p29", "p30", "p31"]
    with pytest.raises(ValueError, match="take no more"):
        results.append(_result(100), 100)


def test_results_already_in_order_stay_open() -> None:
    results = PromptResults.of(_result(i) for i in range(3))
    results.finish()
    results.append(_result(3), 3)
    assert [r.prompt_id for r in results] == ["p0", "p1", "p2", "p3"]


def test_a_worker_gives_the_same_report_as_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "BATCH_BYTES", 4096)  # many batches, back in any order
    data = rows(3000, length=3)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [flip_at(r, 1) if i % 5 == 0 else r for i, r in enumerate(data)])
    one = diff_traces(a, b, DiffOptions(workers=1))
    two = diff_traces(a, b, DiffOptions(workers=2))
    assert one.prompts == two.prompts
    assert one.summary == two.summary and one.summary.statuses["tokens_diverge"] == 600


def test_results_past_the_in_memory_budget_read_back_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = rows(800, length=3)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [flip_at(r, 1) if i % 3 == 0 else r for i, r in enumerate(data)])
    in_memory = diff_traces(a, b)
    monkeypatch.setattr(_results, "_IN_MEMORY", 4096)
    monkeypatch.setattr(_results, "_FLUSH", 1000)
    spilled = diff_traces(a, b)
    assert spilled.prompts._file._rolled and not in_memory.prompts._file._rolled  # noqa: SLF001
    assert spilled.to_dict() == in_memory.to_dict()
    assert [p.prompt_id for p in spilled.diverging()] == [f"p{i}" for i in range(0, 800, 3)]

"""The comparison's per-row state: the seen prompt ids and the results, kept compact."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from detllm.diff import DiffOptions, _align, _parallel, _results, diff_traces
from detllm.diff.model import PromptResult
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


@pytest.mark.parametrize("fan_in", [2, 64])
def test_an_index_past_its_memory_budget_merges_on_disk(monkeypatch: pytest.MonkeyPatch, fan_in: int) -> None:
    # Runs out of order, an index mostly in its file, merged in one pass or in several.
    monkeypatch.setattr(_results, "_INDEX_IN_MEMORY", 16)
    monkeypatch.setattr(_results, "_BLOCK", 8)
    monkeypatch.setattr(_results, "_FAN_IN", fan_in)
    rng = random.Random(5)
    keys = list(range(500))
    runs = [keys[i : i + rng.randrange(1, 40)] for i in range(0, 500, 40)]
    rng.shuffle(runs)
    results = PromptResults()
    for run in runs:
        for key in run:
            results.append(_result(key), key)
    assert results._index_file is not None  # noqa: SLF001
    results.finish()
    present = sorted(k for run in runs for k in run)
    assert [r.prompt_id for r in results] == [f"p{k}" for k in present]
    assert results[-1].prompt_id == f"p{present[-1]}" and results[3].prompt_id == f"p{present[3]}"


def test_an_index_in_order_past_its_memory_budget_reads_back_from_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_results, "_INDEX_IN_MEMORY", 16)
    monkeypatch.setattr(_results, "_BLOCK", 8)
    results = PromptResults.of(_result(i) for i in range(100))
    results.finish()
    results.append(_result(100), 100)
    assert [r.prompt_id for r in results] == [f"p{i}" for i in range(101)]
    assert results[37].prompt_id == "p37" and results[-1].prompt_id == "p100"


def _assembled(path: Path, source: Path, order: list[int]) -> Path:
    """A trace of ``source``'s rows in ``order`` (row numbers, repeats allowed), with its footer."""
    lines = source.read_bytes().splitlines()
    body = [lines[1 + i] for i in order]
    digest = hashlib.sha256(b"".join(line + b"\n" for line in body)).hexdigest()
    footer = json.dumps({"record": "footer", "rows": len(body), "digest": f"sha256:{digest}"}, separators=(",", ":"))
    path.write_bytes(b"\n".join([lines[0], *body, footer.encode()]) + b"\n")
    return path


def _outcome(left: Path, right: Path) -> object:
    try:
        return diff_traces(left, right, DiffOptions(workers=1, buffer_bytes=2000)).to_dict()
    except TraceFormatError as error:
        return str(error)


@pytest.mark.parametrize("seed", range(40))
def test_ids_logged_on_disk_give_the_same_findings_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    # Past the table's limit the duplicate check moves to a log on disk: the report, or
    # the first duplicate's error, must be the one the table gives.
    rng = random.Random(seed)
    n = 30
    data = rows(n, seed=seed, length=2)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [flip_at(r, 1) if rng.random() < 0.3 else r for r in data])
    orders = []
    for _ in range(2):
        order = rng.sample(range(n), rng.randint(n // 2, n)) if rng.random() < 0.5 else list(range(n))
        if rng.random() < 0.5:
            order.sort()
        if rng.random() < 0.6:
            order.insert(rng.randrange(len(order) + 1), rng.choice(order))  # a repeated prompt id
        orders.append(order)
    left = _assembled(tmp_path / "left.jsonl", a, orders[0])
    right = _assembled(tmp_path / "right.jsonl", b, orders[1])
    expected = _outcome(left, right)
    monkeypatch.setattr(_align, "LIMIT", rng.choice([0, 2, 5]))
    assert _outcome(left, right) == expected

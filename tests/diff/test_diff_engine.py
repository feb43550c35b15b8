"""diff_traces: alignment, statuses, classification, errors, options."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import msgspec
import pytest

from detllm.diff import DiffOptions, DiffReport, compare_rows, diff_traces
from detllm.errors import IncompleteTraceError, InputError, TraceFormatError, UsageError
from detllm.reader import open_trace
from detllm.trace import Batch, Decoding, Environment, Logprobs
from detllm.writer import TraceWriter
from tests.diff._traces import drift, flip_at, header, replace, rows, write


def statuses(report: DiffReport) -> dict[str, tuple[str, str]]:
    return {p.prompt_id: (p.status, p.classification) for p in report.prompts}


def test_identical_traces_pass_both_tiers(tmp_path: Path) -> None:
    data = rows(5)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", data, header(created_at="2026-11-29T00:00:00Z"))
    report = diff_traces(a, b)
    assert report.classification == "identical"
    assert report.exit_code(1) == 0 and report.exit_code(2) == 0
    assert [p.prompt_id for p in report.prompts] == [f"p{i}" for i in range(5)]
    assert report.setup.attribution.cause == "run_to_run"
    assert [d.field for d in report.setup.differences] == ["created_at"]


def test_rows_pair_by_prompt_id_not_position(tmp_path: Path) -> None:
    data = rows(6)
    changed = list(data)
    changed[2] = flip_at(data[2], 4)
    a = write(tmp_path / "a.jsonl", data)
    in_order = diff_traces(a, write(tmp_path / "b.jsonl", changed))
    shuffled = list(changed)
    random.Random(3).shuffle(shuffled)
    reordered = diff_traces(a, write(tmp_path / "c.jsonl", shuffled))
    assert statuses(in_order) == statuses(reordered)
    assert statuses(reordered)["p2"][0] == "tokens_diverge"
    assert {s for pid, (s, _) in statuses(reordered).items() if pid != "p2"} == {"identical"}
    assert [p.prompt_id for p in reordered.prompts] == [f"p{i}" for i in range(6)]


def test_rows_waiting_for_their_match_spill_to_disk(tmp_path: Path) -> None:
    data = rows(8, length=20)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [drift(r, -1e-6) for r in reversed(data)])
    report = diff_traces(a, b, DiffOptions(buffer_bytes=0))
    assert {s for s, _ in statuses(report).values()} == {"logprobs_differ"}
    assert any("temporary file" in note for note in report.notes)
    assert statuses(report) == statuses(diff_traces(a, b))


def test_prompts_on_one_side_are_listed(tmp_path: Path) -> None:
    data = rows(4)
    a = write(tmp_path / "a.jsonl", data[:3])
    b = write(tmp_path / "b.jsonl", [data[3], data[1], data[0]])
    report = diff_traces(a, b)
    assert statuses(report) == {
        "p0": ("identical", "identical"),
        "p1": ("identical", "identical"),
        "p2": ("left_only", "unmatched"),
        "p3": ("right_only", "unmatched"),
    }
    assert report.classification == "unmatched"
    assert report.exit_code() == 1


def test_divergence_evidence(tmp_path: Path) -> None:
    base = rows(1, length=10)[0]
    flipped = flip_at(base, 6)
    report = diff_traces(write(tmp_path / "a.jsonl", [base]), write(tmp_path / "b.jsonl", [flipped]))
    result = report.prompts[0]
    d = result.divergence
    assert result.status == "tokens_diverge" and d is not None
    assert d.index == 6
    assert [t.id for t in d.context] == base.token_ids[:6]
    assert d.left.token is not None and d.left.token.id == base.token_ids[6]
    assert d.right.token is not None and d.right.token.id == flipped.token_ids[6]
    assert d.left.rank_in_other == 2 and d.right.rank_in_other == 2
    assert [e.id for e in d.left.top] == [t for t, _ in base.top_logprobs[6]]  # type: ignore[index]
    assert result.drift is not None and result.drift.compared == 6 and result.drift.first_index is None
    # The runner-up's margin decides: this synthetic flip swaps two logprobs, so the
    # gap is twice the left margin, far above the float32 noise floor.
    assert result.evidence is not None and result.evidence.gap == pytest.approx(2 * d.left.margin)
    assert result.classification == "decisive_flip"


def test_near_tie_flip_within_the_noise(tmp_path: Path) -> None:
    base = rows(1, length=10)[0]
    assert base.top_logprobs is not None
    top = [list(s) for s in base.top_logprobs]
    (a, va), (b, _) = top[5][0], top[5][1]
    top[5] = sorted([(a, va), (b, va - 1e-6)] + top[5][2:], key=lambda e: (-e[1], e[0]))
    left = replace(base, top_logprobs=top)
    right = drift(flip_at(left, 5), -2e-6)
    report = diff_traces(write(tmp_path / "a.jsonl", [left]), write(tmp_path / "b.jsonl", [right]))
    result = report.prompts[0]
    assert result.classification == "near_tie_flip"
    e = result.evidence
    assert e is not None and e.noise_source == "drift" and e.noise == pytest.approx(2e-6)
    assert e.gap is not None and e.tolerance is not None and e.gap <= e.tolerance


def test_a_token_outside_the_other_top_k_gives_a_bound(tmp_path: Path) -> None:
    base = rows(1, length=4, top_k=3)[0]
    assert base.top_logprobs is not None and base.logprobs is not None
    top = [list(s) for s in base.top_logprobs]
    outsider = max(t for s in top for t, _ in s) + 1
    top[2] = [(outsider, -0.001)] + [(t, v - 0.001 if v > -0.002 else v) for t, v in top[2][:2]]
    tokens = list(base.token_ids)
    tokens[2] = outsider
    lps = list(base.logprobs)
    lps[2] = -0.001
    right = replace(base, token_ids=tokens, logprobs=lps, top_logprobs=top)
    h = header(logprobs=Logprobs(semantics="raw", top_k=3))
    report = diff_traces(write(tmp_path / "a.jsonl", [base], h), write(tmp_path / "b.jsonl", [right], h))
    result = report.prompts[0]
    assert result.divergence is not None and result.divergence.right.rank_in_other is None
    assert result.evidence is not None and result.evidence.gap_is_bound
    assert result.classification == "decisive_flip"


def test_stop_divergence(tmp_path: Path) -> None:
    base = rows(1, length=10)[0]
    short = replace(
        base,
        token_ids=base.token_ids[:7],
        logprobs=base.logprobs[:7],  # type: ignore[index]
        top_logprobs=base.top_logprobs[:7],  # type: ignore[index]
        finish_reason="stop",
    )
    report = diff_traces(write(tmp_path / "a.jsonl", [short]), write(tmp_path / "b.jsonl", [base]))
    result = report.prompts[0]
    assert (result.status, result.classification) == ("stopped_early", "stop_divergence")
    assert result.divergence is not None and result.divergence.index == 7
    assert result.divergence.left.token is None and result.divergence.right.token is not None


def test_input_mismatch(tmp_path: Path) -> None:
    base = rows(1)[0]
    other = replace(base, input_token_ids=base.input_token_ids + [3])
    report = diff_traces(write(tmp_path / "a.jsonl", [base]), write(tmp_path / "b.jsonl", [other]))
    result = report.prompts[0]
    assert (result.status, result.classification) == ("inputs_differ", "input_mismatch")
    assert result.inputs is not None and result.inputs.index == len(base.input_token_ids)
    assert "The generated tokens are equal nonetheless." in result.notes


def test_sampling_divergence_needs_agreeing_distributions(tmp_path: Path) -> None:
    base = rows(1, length=6)[0]
    assert base.top_logprobs is not None and base.logprobs is not None
    # Same distribution, another pick (the third token) at step 3.
    pick, value = base.top_logprobs[3][2]
    tokens, lps = list(base.token_ids), list(base.logprobs)
    tokens[3], lps[3] = pick, value
    sampled = replace(base, token_ids=tokens, logprobs=lps)
    h = header(decoding=Decoding(do_sample=True, temperature=0.7, max_new_tokens=64, seed=1),
               logprobs=Logprobs(semantics="processed", top_k=5))
    h2 = header(decoding=Decoding(do_sample=True, temperature=0.7, max_new_tokens=64, seed=2),
                logprobs=Logprobs(semantics="processed", top_k=5))
    a = write(tmp_path / "a.jsonl", [base], h)
    report = diff_traces(a, write(tmp_path / "b.jsonl", [sampled], h2))
    assert report.prompts[0].classification == "sampling_divergence"
    assert "different seeds (1 vs 2)" in report.prompts[0].evidence.reason  # type: ignore[union-attr]
    # The same pick from a different distribution (the step's logprobs reassigned,
    # the prefix untouched) is not explained by the draw.
    assert sampled.top_logprobs is not None
    step = sampled.top_logprobs[3]
    values = [v for _, v in step]
    reassigned = sorted(zip([t for t, _ in step], values[1:] + values[:1]), key=lambda e: (-e[1], e[0]))
    top = list(sampled.top_logprobs)
    top[3] = reassigned
    lps = list(sampled.logprobs)  # type: ignore[arg-type]
    lps[3] = dict(reassigned)[pick]
    moved = replace(sampled, top_logprobs=top, logprobs=lps)
    report = diff_traces(a, write(tmp_path / "c.jsonl", [moved], h2))
    assert report.prompts[0].classification == "decisive_flip"


def test_inconclusive_without_logprobs(tmp_path: Path) -> None:
    h = header(logprobs=Logprobs(semantics="none", top_k=0))
    base = rows(1, logprobs=False)[0]
    tokens = list(base.token_ids)
    tokens[4] = (tokens[4] + 1) % 10
    other = replace(base, token_ids=tokens)
    a, b = write(tmp_path / "a.jsonl", [base], h), write(tmp_path / "b.jsonl", [other], h)
    report = diff_traces(a, b)
    assert report.prompts[0].classification == "inconclusive"
    assert report.verdict.tier2 is False
    same = diff_traces(a, a)
    assert same.verdict.tier2 is None and same.exit_code(2) == 2
    with pytest.raises(UsageError, match="records no logprobs"):
        diff_traces(a, a, DiffOptions(tier=2))


def test_tier_2_and_atol(tmp_path: Path) -> None:
    data = rows(3)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [drift(r, -3e-7) for r in data], header(batch=Batch(size=4)))
    report = diff_traces(a, b, DiffOptions(tier=2))
    assert report.exit_code() == 1 and report.exit_code(1) == 0
    assert report.setup.attribution.cause == "batch_dependence"
    first = report.prompts[0]
    assert first.status == "logprobs_differ" and first.drift is not None
    assert first.drift.first_index == 0 and first.drift.max_abs == pytest.approx(3e-7, rel=1e-3)
    loose = diff_traces(a, b, DiffOptions(tier=2, atol=1e-6))
    assert loose.exit_code() == 0 and loose.classification == "identical"


def test_top_k_alternatives_alone_fail_tier_2(tmp_path: Path) -> None:
    base = rows(1)[0]
    assert base.top_logprobs is not None
    top = [list(s) for s in base.top_logprobs]
    t, v = top[3][-1]
    top[3][-1] = (t, v - 0.25)
    report = diff_traces(write(tmp_path / "a.jsonl", [base]), write(tmp_path / "b.jsonl", [replace(base, top_logprobs=top)]))
    result = report.prompts[0]
    assert result.status == "logprobs_differ"
    assert result.drift is not None and result.drift.first_index is None and result.drift.top_first_index == 3


def test_rows_in_another_layout_compare_by_content(tmp_path: Path) -> None:
    data = rows(3)
    a = write(tmp_path / "a.jsonl", data)
    lines = a.read_bytes().splitlines()
    # Re-encode the rows with spaces and another key order: same content, other bytes.
    pretty = [lines[0]] + [json.dumps(dict(reversed(list(json.loads(l).items())))).encode() for l in lines[1:-1]]
    import hashlib

    digest = hashlib.sha256(b"".join(l + b"\n" for l in pretty[1:])).hexdigest()
    footer = json.dumps({"record": "footer", "rows": 3, "digest": f"sha256:{digest}"}).encode()
    b = tmp_path / "b.jsonl"
    b.write_bytes(b"\n".join(pretty + [footer]) + b"\n")
    report = diff_traces(a, b)
    assert report.classification == "identical"


def test_gzip_traces(tmp_path: Path) -> None:
    data = rows(2)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl.gz", data)
    with gzip.open(b) as f:
        assert f.readline().startswith(b'{"record":"header"')
    assert diff_traces(a, b).classification == "identical"


def test_duplicate_prompt_ids_are_an_error(tmp_path: Path) -> None:
    data = rows(2)
    a = write(tmp_path / "a.jsonl", data)
    raw = a.read_bytes().splitlines()
    twice = tmp_path / "twice.jsonl"
    import hashlib

    body = [raw[1], raw[2], raw[1]]
    digest = hashlib.sha256(b"".join(l + b"\n" for l in body)).hexdigest()
    footer = json.dumps({"record": "footer", "rows": 3, "digest": f"sha256:{digest}"}, separators=(",", ":")).encode()
    twice.write_bytes(b"\n".join([raw[0], *body, footer]) + b"\n")
    with pytest.raises(TraceFormatError, match=r"twice.jsonl:4: prompt_id: duplicate prompt id 'p0'"):
        diff_traces(a, twice)


def test_a_modified_trace_fails_its_digest(tmp_path: Path) -> None:
    data = rows(2)
    a = write(tmp_path / "a.jsonl", data)
    b = tmp_path / "b.jsonl"
    text = a.read_text().replace('"finish_reason":"length"', '"finish_reason":"lengthy"', 1)
    b.write_text(text)
    with pytest.raises(TraceFormatError) as info:
        diff_traces(a, b)
    assert str(info.value) == f"{b}:4: digest: does not match the rows: the trace was modified or corrupted"


def test_an_invalid_diverging_row_names_its_field(tmp_path: Path) -> None:
    data = rows(2)
    a = write(tmp_path / "a.jsonl", data)
    b = tmp_path / "b.jsonl"
    lines = a.read_bytes().splitlines()
    broken = json.loads(lines[2])
    broken["logprobs"] = broken["logprobs"][:-1]
    lines[2] = json.dumps(broken, separators=(",", ":")).encode()
    import hashlib

    digest = hashlib.sha256(b"".join(l + b"\n" for l in lines[1:3])).hexdigest()
    lines[3] = json.dumps({"record": "footer", "rows": 2, "digest": f"sha256:{digest}"}, separators=(",", ":")).encode()
    b.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(TraceFormatError) as info:
        diff_traces(a, b)
    assert str(info.value) == f"{b}:3: logprobs: has 11 entries but token_ids has 12"


def test_incomplete_traces_are_refused_unless_allowed(tmp_path: Path) -> None:
    data = rows(3)
    a = write(tmp_path / "a.jsonl", data)
    writer = TraceWriter(tmp_path / "b.jsonl", header())
    for r in data[:2]:
        writer.write(r)
    partial = writer.abandon()
    with pytest.raises(IncompleteTraceError, match="without its footer"):
        diff_traces(a, partial)
    report = diff_traces(a, partial, DiffOptions(allow_incomplete=True))
    assert not report.right.complete
    assert any("incomplete" in n for n in report.notes)
    assert statuses(report)["p2"] == ("left_only", "unmatched")


def test_run_directories(tmp_path: Path) -> None:
    data = rows(2)
    run = tmp_path / "run"
    write(run / "trace.jsonl", data)
    (run / "report.json").write_text("{}")
    assert diff_traces(run, run).classification == "identical"
    several = tmp_path / "several"
    write(several / "a.jsonl", data)
    write(several / "b.jsonl", data)
    with pytest.raises(UsageError, match=r"several: holds several traces \(a.jsonl, b.jsonl\); name the one to use"):
        diff_traces(several, run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no trace in this directory"):
        diff_traces(tmp_path / "empty", run)
    with pytest.raises(InputError, match="no such file or directory"):
        diff_traces(tmp_path / "missing.jsonl", run)


def test_header_attribution() -> None:
    from detllm.diff import compare_setup

    h = header()
    cases = {
        "run_to_run": header(created_at="2030-01-01T00:00:00Z", labels={"run": "2"}),
        "batch_dependence": header(batch=Batch(size=8)),
        "environment": header(environment=Environment(gpu="H100"), batch=Batch(size=8)),
        "different_setup": header(dtype="bfloat16"),
    }
    for cause, other in cases.items():
        assert compare_setup(h, other).attribution.cause == cause
    greedy_seed = header(decoding=Decoding(do_sample=False, max_new_tokens=64, seed=7))
    setup = compare_setup(h, greedy_seed)
    assert setup.attribution.cause == "run_to_run"
    assert [(d.field, d.category) for d in setup.differences] == [("decoding.seed", "ignored")]


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    base = rows(3)
    a = write(tmp_path / "a.jsonl", base)
    b = write(tmp_path / "b.jsonl", [base[0], flip_at(base[1], 2), drift(base[2], -1e-3)])
    report = diff_traces(a, b, DiffOptions(tier=2))
    data = report.to_dict()
    assert (data["format"], data["version"], data["kind"]) == ("detllm.report", "1.2", "diff")
    again = DiffReport.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict() == data
    assert again.exit_code() == report.exit_code() == 1


def test_from_dict_names_the_bad_field(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", rows(1))
    data = diff_traces(a, a).to_dict()
    del data["producer"]
    with pytest.raises(TraceFormatError, match="^report.json:1: producer: missing required field$"):
        DiffReport.from_dict(data, path="report.json")
    data = diff_traces(a, a).to_dict()
    data["verdict"]["tier1"] = "yes"
    with pytest.raises(TraceFormatError, match="^report.json:1: verdict.tier1: expected bool, got str$"):
        DiffReport.from_dict(data, path="report.json")
    with pytest.raises(TraceFormatError, match="major version 2 is not supported"):
        DiffReport.from_dict({**data, "version": "2.0"}, path="report.json")
    with pytest.raises(TraceFormatError, match="^report.json:1: kind: expected one of 'diff', got 'aggregate'$"):
        DiffReport.from_dict({**data, "kind": "aggregate"}, path="report.json")


def test_compare_rows_in_memory() -> None:
    base = rows(1)[0]
    result = compare_rows(base, flip_at(base, 3), header(), header())
    assert (result.status, result.divergence.index) == ("tokens_diverge", 3)  # type: ignore[union-attr]
    assert compare_rows(base, base, header(), header()).status == "identical"
    with pytest.raises(ValueError, match="logprobs: has 1 entries"):
        compare_rows(base, replace(base, logprobs=[-1.0]), header(), header())


def test_options_are_checked() -> None:
    with pytest.raises(UsageError, match="tier must be 1 or 2"):
        DiffOptions(tier=3)
    with pytest.raises(UsageError, match="atol"):
        DiffOptions(atol=-1)
    assert msgspec.json.decode(msgspec.json.encode(DiffOptions().to_dict()))["near_tie_factor"] == 4.0



def test_worker_processes_give_the_same_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detllm.diff import _parallel
    from detllm.report import render_json

    monkeypatch.setattr(_parallel, "BATCH_BYTES", 2000)  # many small batches
    data = rows(30, length=20)
    changed = [flip_at(r, i % 20) if i % 3 else drift(r, -1e-6) for i, r in enumerate(data)]
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", changed[:-2] + [changed[-1]])
    alone = diff_traces(a, b)
    together = diff_traces(a, b, DiffOptions(workers=2))
    assert render_json(together) == render_json(alone)
    assert [p.prompt_id for p in together.prompts] == [p.prompt_id for p in alone.prompts]


def test_worker_processes_report_a_bad_row_like_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detllm.diff import _parallel

    monkeypatch.setattr(_parallel, "BATCH_BYTES", 2000)
    data = rows(10, length=20)
    a = write(tmp_path / "a.jsonl", data)
    b = tmp_path / "b.jsonl"
    lines = a.read_bytes().splitlines()
    broken = json.loads(lines[7])
    runner_up, value = broken["top_logprobs"][3][1]
    broken["token_ids"][3], broken["logprobs"][3] = runner_up, value  # a flip, so step 3 is read
    broken["top_logprobs"][3] = list(reversed(broken["top_logprobs"][3]))  # and out of order
    lines[7] = json.dumps(broken, separators=(",", ":")).encode()
    import hashlib

    digest = hashlib.sha256(b"".join(l + b"\n" for l in lines[1:-1])).hexdigest()
    lines[-1] = json.dumps({"record": "footer", "rows": 10, "digest": f"sha256:{digest}"}, separators=(",", ":")).encode()
    b.write_bytes(b"\n".join(lines) + b"\n")
    messages = []
    for workers in (1, 2):
        with pytest.raises(TraceFormatError) as info:
            diff_traces(a, b, DiffOptions(workers=workers))
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"{b}:8: top_logprobs[3][1]: ")


@pytest.mark.parametrize("shape", ["identical", "part_way", "reordered", "from_the_start"])
def test_a_worker_hashing_the_left_trace_checks_the_same_digests(tmp_path: Path, shape: str) -> None:
    data = rows(12, length=16)
    if shape == "identical":
        other = data
    elif shape == "part_way":
        other = data[:7] + [drift(r, -1e-6) for r in data[7:]]
    elif shape == "reordered":
        other = data[:4] + list(reversed(data[4:]))
    else:
        other = [flip_at(r, 3) for r in data]
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl.gz", other, header(created_at="2026-11-29T00:00:00Z"))
    assert statuses(diff_traces(a, b, DiffOptions(workers=2))) == statuses(diff_traces(a, b))
    # A modified file is caught on either side, with or without the worker.
    text = a.read_text()
    last_row = text.splitlines()[-2]
    changed = tmp_path / "changed.jsonl"
    changed.write_text(text.replace(last_row, last_row.replace('"finish_reason":"length"', '"finish_reason":"lengths"')))
    for left, right in ((changed, b), (b, changed)):
        for workers in (1, 2):
            with pytest.raises(TraceFormatError) as info:
                diff_traces(left, right, DiffOptions(workers=workers))
            assert str(info.value) == f"{changed}:14: digest: does not match the rows: the trace was modified or corrupted"


def test_rows_digest_matches_the_footer(tmp_path: Path) -> None:
    from detllm.diff._parallel import rows_digest, rows_prefix_digest

    for name, data in (("empty.jsonl", []), ("some.jsonl.gz", rows(3)), ("more.jsonl", rows(40, length=30))):
        path = write(tmp_path / name, data)
        with open_trace(path) as reader:
            raw_lengths = [len(raw) + 1 for _, raw in reader.raw_rows()]
            footer = reader.footer
        assert footer is not None and rows_digest(str(path)) == footer.digest
        assert "sha256:" + rows_prefix_digest(str(path), sum(raw_lengths)).hexdigest() == footer.digest
    # A footer line without its newline is still left out.
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes((tmp_path / "more.jsonl").read_bytes().rstrip(b"\n"))
    assert rows_digest(str(cut)) == footer.digest


def test_the_shortcut_encoding_of_identical_results() -> None:
    from detllm.diff._analysis import identical, identical_encoded

    for pid in ("p0", 'quote " and \\ back', "é 猫 \n"):
        assert identical_encoded(pid, 3, 7) == msgspec.json.encode(identical(pid, 3, 7))


def test_workers_read_rows_back_by_offset(tmp_path: Path) -> None:
    import pickle

    from detllm.diff._align import Aligner, Pair
    from detllm.diff._parallel import Item, analyse
    from detllm.diff._analysis import Context

    data = rows(6, length=10)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [flip_at(r, 2) for r in reversed(data)])
    with open_trace(a, verify_digest=False) as left, open_trace(b, verify_digest=False) as right:
        ctx = Context.of(left.header, right.header, DiffOptions())
        pairs = [e for e in Aligner(left, right, 0) if isinstance(e, Pair)]
    items = [
        Item(i, p.left_index, p.left_line, p.left_raw, p.left_offset, len(p.left_raw),
             p.right_index, p.right_line, p.right_raw, p.right_offset, len(p.right_raw))
        for i, p in enumerate(pairs)
    ]
    assert all(p.left_offset > 0 and p.right_offset > 0 for p in pairs)
    shipped = pickle.loads(pickle.dumps(items))
    assert all(i.left_raw is None and i.right_raw is None for i in shipped)
    assert analyse(ctx, shipped, (str(a), str(b))) == analyse(ctx, items)

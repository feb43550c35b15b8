"""The recorded trace pairs in fixtures/recorded/ show what their README says.

These read files only: no torch, no model.
"""

from __future__ import annotations

import pytest

from detllm import open_trace, validate_trace
from detllm.capture.models import checkout_root
from detllm.diff import diff_traces

RECORDED = checkout_root() / "fixtures" / "recorded"
PAIRS = ("flip-batch-size", "drift-batch-size", "repeat-identical", "sampling-seeds", "model-mismatch")


def read(name: str, side: str):
    with open_trace(RECORDED / name / f"{side}.jsonl") as reader:
        header = reader.header
        rows = list(reader)
    with open_trace(RECORDED / name / f"{side}.jsonl") as reader:
        lines = [raw for _, raw in reader.raw_rows()]
    return header, rows, lines


def first_divergence(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


@pytest.mark.parametrize("name", PAIRS)
def test_pairs_are_valid_traces_with_a_readme(name):
    for side in ("left", "right"):
        result = validate_trace(RECORDED / name / f"{side}.jsonl")
        assert result.valid, [str(f) for f in result.findings]
    readme = (RECORDED / name / "README.md").read_text(encoding="utf-8")
    assert f"`python fixtures/record_traces.py {name}`" in readme
    assert readme.count("`detllm run --model") == 2


def test_recorded_fixtures_are_small():
    assert sum(p.stat().st_size for p in RECORDED.rglob("*") if p.is_file()) < 2 * 1024 * 1024


def test_flip_pair_diverges_at_near_ties_of_the_same_model():
    left, left_rows, _ = read("flip-batch-size", "left")
    right, right_rows, _ = read("flip-batch-size", "right")
    assert left.model.fingerprint == right.model.fingerprint
    assert (left.batch.size, right.batch.size) == (1, 8)
    reported = {r.prompt_id: r for r in diff_traces(*(RECORDED / "flip-batch-size" / f"{s}.jsonl" for s in ("left", "right"))).prompts}
    flips = 0
    for a, b in zip(left_rows, right_rows):
        assert a.input_token_ids == b.input_token_ids
        step = first_divergence(a.token_ids, b.token_ids)
        divergence = reported[a.prompt_id].divergence
        if step is None:
            assert divergence is None
            continue
        flips += 1
        # The diff engine finds the same step, and the context it shows is the shared prefix.
        assert divergence is not None and divergence.index == step
        assert [t.id for t in divergence.context] == a.token_ids[divergence.context_start : step]
        assert (divergence.left.token.id, divergence.right.token.id) == (a.token_ids[step], b.token_ids[step])
        low, high = sorted((a.token_ids[step], b.token_ids[step]))
        assert low % 2 == 0 and high == low + 1
        for row in (a, b):
            (_, best), (_, second) = row.top_logprobs[step][:2]
            assert best - second < 1e-5
    assert flips >= 1


def test_drift_pair_has_equal_tokens_and_unequal_logprobs():
    _, left_rows, _ = read("drift-batch-size", "left")
    _, right_rows, _ = read("drift-batch-size", "right")
    drift = 0.0
    for a, b in zip(left_rows, right_rows):
        assert a.token_ids == b.token_ids
        drift = max(drift, *(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)))
    assert 0 < drift < 1e-4


def test_repeat_pair_rows_are_byte_identical():
    _, _, left_lines = read("repeat-identical", "left")
    _, _, right_lines = read("repeat-identical", "right")
    assert left_lines == right_lines and len(left_lines) == 8


def test_sampling_pair_differs_by_seed():
    left, left_rows, _ = read("sampling-seeds", "left")
    right, right_rows, _ = read("sampling-seeds", "right")
    assert left.decoding.do_sample and right.decoding.do_sample
    assert (left.decoding.seed, right.decoding.seed) == (1, 2)
    assert sum(a.token_ids != b.token_ids for a, b in zip(left_rows, right_rows)) >= 4


def test_model_mismatch_pair_has_different_fingerprints():
    left, left_rows, _ = read("model-mismatch", "left")
    right, right_rows, _ = read("model-mismatch", "right")
    assert left.model.fingerprint != right.model.fingerprint
    assert left.tokenizer.fingerprint == right.tokenizer.fingerprint
    assert [r.input_token_ids for r in left_rows] == [r.input_token_ids for r in right_rows]


def test_replay_pair_holds_the_same_tokens_and_names_its_source():
    for name in ("original", "replay"):
        result = validate_trace(RECORDED / "replay-bf16" / f"{name}.jsonl")
        assert result.valid, [str(f) for f in result.findings]
    with open_trace(RECORDED / "replay-bf16" / "original.jsonl") as reader:
        original, original_rows = reader.header, list(reader)
        footer = reader.footer
    with open_trace(RECORDED / "replay-bf16" / "replay.jsonl") as reader:
        replay, replay_rows = reader.header, list(reader)
    assert (original.version, replay.version, original.dtype, replay.dtype) == ("1.0", "1.1", "bfloat16", "float32")
    assert replay.replay is not None and footer is not None and replay.replay.source_digest == footer.digest
    assert [r.token_ids for r in replay_rows] == [r.token_ids for r in original_rows]
    assert all(r.ranks is not None and len(r.ranks) == len(r.token_ids) for r in replay_rows)
    assert any(rank > 1 for r in replay_rows for rank in r.ranks or [])

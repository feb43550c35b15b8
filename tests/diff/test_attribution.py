"""What a difference is attributed to: headers, and the rows' own evidence."""

from __future__ import annotations

from pathlib import Path

import msgspec

from detllm.diff import diff_traces
from detllm.report import render_json, render_text
from detllm.trace import Artifact, Batch, Decoding

from tests.diff import _traces as t


def _pair(tmp_path: Path, left_rows, right_rows, left_head=None, right_head=None):
    return diff_traces(t.write(tmp_path / "a.jsonl", left_rows, left_head), t.write(tmp_path / "b.jsonl", right_rows, right_head))


def test_rows_with_other_inputs_win_over_matching_headers(tmp_path: Path) -> None:
    rows = t.rows(4)
    other = [t.replace(r, input_token_ids=[*r.input_token_ids, 1]) for r in rows]
    a = _pair(tmp_path, rows, other).setup.attribution
    assert a.cause == "different_setup"
    assert a.settings == ["input_ids"]
    assert a.text.startswith("The rows show different input token ids for 4 of 4 prompts")


def test_greedy_ignores_sampling_settings_and_keeps_the_batch_difference(tmp_path: Path) -> None:
    rows = t.rows(3)
    left = t.header(decoding=Decoding(do_sample=False, max_new_tokens=64, temperature=1.0, top_p=1.0, top_k=0))
    right = t.header(decoding=Decoding(do_sample=False, max_new_tokens=64, temperature=0.7, top_p=0.9, top_k=40),
                     batch=Batch(size=8))
    setup = _pair(tmp_path, rows, rows, left, right).setup
    kinds = {d.field: (d.category, d.note) for d in setup.differences}
    assert kinds["decoding.temperature"] == ("ignored", "greedy decoding does not use it: it picks the most likely token")
    assert kinds["decoding.top_k"][0] == "ignored"
    assert setup.attribution.cause == "batch_dependence"
    assert setup.attribution.settings == ["batch_size"]


def test_settings_name_each_factor(tmp_path: Path) -> None:
    rows = t.rows(2)
    right = t.header(dtype="bfloat16", decoding=Decoding(do_sample=False, max_new_tokens=32),
                     model=Artifact(id="test/other", fingerprint="sha256:" + "3" * 64))
    a = _pair(tmp_path, rows, rows, None, right).setup.attribution
    assert a.factors == ["setup"]
    assert a.settings == ["model", "dtype", "max_new_tokens"]


def test_a_flip_under_another_setting_names_what_moved_the_tie(tmp_path: Path) -> None:
    rows = t.rows(2, length=8)
    first = rows[0]
    tops = list(first.top_logprobs)
    (a, top), (b, _) = tops[3][0], tops[3][1]
    tops[3] = [(a, top), (b, top - 1e-6), *tops[3][2:]]  # a near tie at token 3
    tied = t.replace(first, top_logprobs=tops)
    right = t.header(dtype="bfloat16")
    report = _pair(tmp_path, [tied, rows[1]], [t.flip_at(tied, 3), rows[1]], None, right)
    result = next(r for r in report.prompts if r.prompt_id == "p0")
    assert result.classification == "near_tie_flip"
    assert result.evidence.reason.endswith("consistent with a near tie that the difference in dtype tipped the other way.")
    same = _pair(tmp_path, [tied, rows[1]], [t.flip_at(tied, 3), rows[1]])
    assert next(r for r in same.prompts if r.prompt_id == "p0").evidence.reason.endswith(
        "consistent with a near tie that numerical noise resolved differently."
    )


def test_one_missing_fingerprint_is_unknown_not_a_difference(tmp_path: Path) -> None:
    rows = t.rows(2)
    right = t.header(model=Artifact(id="test/model", fingerprint=None))
    setup = _pair(tmp_path, rows, rows, None, right).setup
    difference = next(d for d in setup.differences if d.field == "model.fingerprint")
    assert difference.category == "recording"
    assert difference.note == "not recorded in the right trace: whether the models are the same is unknown"
    assert setup.attribution.cause == "run_to_run"
    assert setup.attribution.text.endswith("Whether the model is the same is unknown: not every trace records its fingerprint.")


def test_both_fingerprints_missing_say_a_name_is_not_the_model(tmp_path: Path) -> None:
    rows = t.rows(2)
    head = t.header(model=Artifact(id="test/model", fingerprint=None))
    text = _pair(tmp_path, rows, rows, head, head).setup.attribution.text
    assert text.endswith("No trace records the model's fingerprint, so the same model cannot be told from the same name ('test/model').")


def test_reordered_rows_are_noted_even_in_memory(tmp_path: Path) -> None:
    rows = t.rows(4)
    report = _pair(tmp_path, rows, list(reversed(rows)))
    assert "The traces list their prompts in different orders; 4 rows waited for their match." in report.notes
    assert "in different orders" in render_text(report)


def test_a_report_names_its_version(tmp_path: Path) -> None:
    rows = t.rows(1)
    document = msgspec.json.decode(render_json(_pair(tmp_path, rows, rows)))
    assert document["version"] == "1.2" and document["setup"]["attribution"]["settings"] == []


def test_atol_is_shown_with_why_tier2_still_fails(tmp_path: Path) -> None:
    from detllm.diff import DiffOptions

    rows = t.rows(2, length=6)
    moved = []
    for r in rows:
        tops = [list(step) for step in r.top_logprobs]
        tops[2][-1] = (99, tops[2][-1][1])  # another token at the bottom of the top-k
        moved.append(t.replace(r, top_logprobs=tops, token_texts={**r.token_texts, 99: " x"}))
    report = diff_traces(t.write(tmp_path / "a.jsonl", rows), t.write(tmp_path / "b.jsonl", moved), DiffOptions(atol=0.01))
    assert report.verdict.tier1 and report.verdict.tier2 is False
    assert report.verdict.text.endswith(
        "Tier 1 holds; Tier 2 fails with atol 0.01 (logprobs within it count as equal, but a top-k list that holds "
        "other tokens, or an alternative moved by more, does not)."
    )
    assert "Tier 2 fails with atol 0.01" in " ".join(render_text(report).split())
    assert "never within a tolerance" in report.prompts[0].evidence.reason


def test_wording_counts_tokens(tmp_path: Path) -> None:
    rows = t.rows(1, length=6)
    short = t.replace(rows[0], token_ids=rows[0].token_ids[:5], logprobs=rows[0].logprobs[:5],
                      top_logprobs=rows[0].top_logprobs[:5], finish_reason="stop")
    report = _pair(tmp_path, rows, [short])
    assert report.verdict.text.startswith("1 of 1 prompt stops at another length, the shorter output a prefix of the longer")
    assert "in its tokens" not in report.verdict.text
    reason = report.prompts[0].evidence.reason
    assert reason.startswith("The right side stopped after 5 tokens ('stop'); the left side went on with ")
    assert "more token" not in reason.split(" Tier")[0].split("went on with")[1]  # the last token: no "and 0 more tokens"

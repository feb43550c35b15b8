"""``detllm replay`` on the fixture models (hf): teacher forcing, ranks, the baseline, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detllm import open_trace, validate_trace
from detllm.capture.backend import ForcedSequence
from detllm.cli import main
from detllm.diff import build_replay_report
from detllm.report._replay_render import render_replay_text

pytestmark = pytest.mark.hf

COMMON = ["--device", "cpu", "--mode", "strict"]


@pytest.fixture(autouse=True, scope="module")
def _needs_torch():
    # Module scope: it runs before the module-scoped fixtures that load a model.
    pytest.importorskip("torch")


def _run(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    assert main(["run", *args, *COMMON, "--max-new-tokens", "12", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("fp32"), "run", "--model", "tiny-llama", "--batch-size", "3")


def test_a_greedy_float32_trace_replayed_under_its_own_setup_is_rank_1_everywhere(fp32_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "replay"
    assert main(["replay", str(fp32_run), "--model", "tiny-llama", "--batch-size", "3", *COMMON, "--out", str(out)]) == 0
    assert "compare: detllm diff" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["determinism_applied.json", "env.json", "run_config.json", "trace.jsonl"]
    assert validate_trace(out / "trace.jsonl").valid
    with open_trace(fp32_run / "trace.jsonl") as source:
        rows = list(source)
        footer = source.footer
    with open_trace(out / "trace.jsonl") as replay:
        header, replayed = replay.header, list(replay)
    assert header.version == "1.1" and header.replay is not None and footer is not None
    assert (header.replay.source_digest, header.replay.source_rows) == (footer.digest, footer.rows)
    assert header.backend_settings["replay"]["prefix_cache"] == "not used"
    assert header.logprobs.top_k == 5 and header.batch.size == 3
    assert [r.token_ids for r in replayed] == [r.token_ids for r in rows]
    for row in replayed:
        assert row.ranks == [1] * len(row.token_ids)
        assert row.top_logprobs is not None and [step[0][0] for step in row.top_logprobs] == row.token_ids
    assert [(r.batch.index, r.batch.position, r.batch.size) for r in replayed if r.batch] == [
        (i // 3, i % 3, 3 if i < 6 else len(rows) - 6) for i in range(len(rows))
    ]

    document = build_replay_report(fp32_run, out)
    assert document.verdict.baseline and document.verdict.all_rank_1 and document.setup == []
    s = document.summary
    assert s.would_flip == 0 and s.top1_agree == s.top1_compared == s.positions
    assert s.max_abs_delta is not None and s.max_abs_delta < 1e-4  # prefill vs decode, float32
    text = render_replay_text(document)
    assert "prefill/decode baseline (same setup: the noise floor, not a setup difference)" in text
    assert f"max {s.max_abs_delta:.3g}, mean {s.mean_abs_delta:.3g}" in text
    assert main(["diff", str(fp32_run), str(out), "-q"]) == 0


def test_replay_of_a_bfloat16_trace_under_float32_measures_kl(tmp_path: Path) -> None:
    source = _run(tmp_path, "bf16", "--model", "tiny-llama", "--dtype", "bfloat16", "--batch-size", "4")
    out = tmp_path / "replay.jsonl"
    assert main(["replay", str(source), "--model", "tiny-llama", "--dtype", "float32", *COMMON, "--out", str(out)]) == 0
    document = build_replay_report(source, out)
    assert not document.verdict.baseline
    assert [(d.field, d.original, d.replay) for d in document.setup] == [("dtype", "bfloat16", "float32"), ("batch.size", 4, 1)]
    assert document.summary.kl_mean is not None and document.summary.kl_mean > 0
    assert document.summary.max_abs_delta is not None and document.summary.max_abs_delta > 1e-4
    text = render_replay_text(document)
    for prompt in document.prompts:
        for flip in prompt.flips:  # whether a flip happens depends on the CPU's kernels; each one is named
            assert flip.rank is not None and flip.rank > 1 and flip.margin >= 0
            assert f"{prompt.prompt_id} @{flip.index}:" in text
    assert main(["diff", str(source), str(out), "-q"]) == (1 if document.summary.would_flip else 0)


def test_scores_and_ranks_are_exact_and_do_not_depend_on_padding(load) -> None:
    import torch

    backend = load("tiny-flip")
    sequences = [
        ForcedSequence("a", (5, 6, 7, 8, 9, 10, 11), (12, 13, 14)),
        ForcedSequence("b", (20,), (21, 22, 23, 24, 25)),
        ForcedSequence("c", (30, 31), ()),
    ]
    together = backend.score(sequences, top_k=4)
    alone = [backend.score([s], top_k=4)[0] for s in sequences]
    assert [len(steps) for steps in together] == [3, 5, 0]
    for sequence, steps, single in zip(sequences, together, alone):
        ids = torch.tensor([[*sequence.input_ids, *sequence.forced_ids]])
        with torch.inference_mode():
            logprobs = torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), dim=-1)
        start = len(sequence.input_ids) - 1
        for j, (token, step, one) in enumerate(zip(sequence.forced_ids, steps, single)):
            row = logprobs[start + j]
            rank = int((row > row[token]).sum()) + int(((row == row[token]) & (torch.arange(row.shape[0]) < token)).sum()) + 1
            assert step.rank == one.rank == rank
            assert step.logprob == pytest.approx(float(row[token]), abs=1e-5)
            assert one.logprob == pytest.approx(float(row[token]), abs=1e-5)
            assert list(step.top_ids[:1]) == [int(torch.argmax(row))]
            assert len(step.top_ids) == 4 and list(step.top_logprobs) == sorted(step.top_logprobs, reverse=True)


def test_a_token_outside_the_vocabulary_is_refused(load) -> None:
    from detllm.errors import CaptureError

    backend = load("tiny-llama")
    with pytest.raises(CaptureError) as info:
        backend.score([ForcedSequence("p", (1, 2), (backend.vocab_size,))], top_k=2)
    assert str(info.value) == f"replay of 'p': token id {backend.vocab_size} is outside the vocabulary (0..{backend.vocab_size - 1})"


def test_bad_input_is_one_line_and_exit_2(fp32_run: Path, tmp_path: Path, capsys) -> None:
    def replay(*argv: str) -> tuple[int, str]:
        code = main(["replay", *argv])
        captured = capsys.readouterr()
        return code, captured.err

    missing = tmp_path / "nothing.jsonl"
    assert replay(str(missing), "--model", "tiny-llama", "--out", str(tmp_path / "r1")) == (
        2, f"detllm: {missing}: no such file or directory\n"
    )  # fmt: skip
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join((fp32_run / "trace.jsonl").read_bytes().splitlines(keepends=True)[:-1]))
    code, err = replay(str(cut), "--model", "tiny-llama", "--out", str(tmp_path / "r2"))
    assert code == 1 and err.startswith(f"detllm: {cut}:") and "footer: missing" in err and err.count("\n") == 1
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    assert replay(str(fp32_run), "--model", "tiny-llama", "--out", str(busy)) == (
        2, f"detllm: {busy}: directory is not empty; choose another --out or remove it\n"
    )  # fmt: skip
    assert replay(str(fp32_run), "--model", "tiny-llama", "--top-logprobs", "-1", "--out", str(tmp_path / "r3.jsonl")) == (
        2, "detllm: --top-logprobs must be >= 0, got -1\n"
    )  # fmt: skip
    code, err = replay(str(fp32_run), "--model", "tiny-llama", "--base-url", "http://127.0.0.1:1", "--out", str(tmp_path / "r4.jsonl"))
    assert (code, err) == (2, "detllm: --base-url applies to --backend openai only\n")
    assert not (tmp_path / "r3.jsonl").exists() and not (tmp_path / "r4.jsonl").exists()
    taken = tmp_path / "taken.jsonl"
    taken.write_text("")
    assert replay(str(fp32_run), "--model", "tiny-llama", "--out", str(taken)) == (
        2, f"detllm: {taken}: exists; choose another --out or remove it\n"
    )  # fmt: skip


def test_run_config_names_the_source(fp32_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay"
    assert main(["replay", str(fp32_run), "--model", "tiny-llama", "--top-logprobs", "2", *COMMON, "--out", str(out)]) == 0
    document = json.loads((out / "run_config.json").read_text())
    assert document["replay_of"]["digest"].startswith("sha256:")
    assert document["command"][:2] == ["detllm", "replay"]
    with open_trace(out / "trace.jsonl") as reader:
        assert reader.header.logprobs.top_k == 2
        assert all(len(step) == 2 for row in reader for step in row.top_logprobs or [])


def test_python_api_replay_and_report(fp32_run: Path, tmp_path: Path) -> None:
    import detllm
    from detllm.errors import UsageError

    result = detllm.replay(fp32_run, "tiny-llama", out=tmp_path / "r.jsonl", device="cpu", batch_size=3, dtype="bfloat16")
    assert result.rows == 8 and result.header.dtype == "bfloat16"
    report = detllm.replay_report(fp32_run, result.path)
    assert not report.verdict.baseline and report.summary.positions == result.tokens
    with pytest.raises(UsageError, match="is not a replay"):
        detllm.replay_report(result.path, fp32_run)
    with pytest.raises(UsageError, match="^detllm.replay: Unexpected keyword argument 'colour'$"):
        detllm.replay(fp32_run, "tiny-llama", out=tmp_path / "x.jsonl", colour="red")

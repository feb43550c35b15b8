"""Processed logprobs, from an engine whose core runs in the test process."""

from __future__ import annotations

import math

import pytest

from _vllm_fixtures import vllm_installed  # noqa: E402

if not vllm_installed():
    pytest.skip("vLLM is not installed", allow_module_level=True)

from detllm.capture.backend import Prompt  # noqa: E402
from detllm.capture.registry import BackendConfig  # noqa: E402
from detllm.trace import Decoding  # noqa: E402

pytestmark = pytest.mark.vllm

PROMPTS = [Prompt(id="fox", text="The quick brown fox"), Prompt(id="hello", text="Hello world!")]


@pytest.fixture(scope="module")
def processed_engine(model_dir: str):
    from detllm.capture.vllm import VLLMBackend

    backend = VLLMBackend(
        BackendConfig(
            model=model_dir,
            max_batch_size=2,
            options={"logprob_mode": "processed", "multiprocessing": False, "max_model_len": 256},
        )
    )
    yield backend
    backend.close()


def test_processed_semantics_are_recorded(processed_engine) -> None:
    settings = processed_engine.describe().settings
    assert settings["logprobs_mode"] == "processed_logprobs"
    assert settings["logprobs_semantics"] == "processed"
    assert settings["engine_core"] == "in process"
    assert settings["environment"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert processed_engine.engine_pids == []


def test_processed_logprobs_follow_the_sampling_transforms(processed_engine) -> None:
    """With top-k 3 sampling, the processed distribution has exactly 3 tokens: the
    recorded top-6 keeps those 3 (the others are -inf) and their probabilities sum to 1."""
    decoding = Decoding(do_sample=True, temperature=0.5, top_k=3, max_new_tokens=10, seed=7)
    rows = processed_engine.generate(PROMPTS, decoding, top_k=6, logprob_mode="processed")
    for row in rows:
        for token, value, step in zip(row.token_ids, row.logprobs, row.top_logprobs):
            assert len(step) == 3
            assert token in dict(step) and dict(step)[token] == value
            assert math.isclose(sum(math.exp(v) for _, v in step), 1.0, rel_tol=1e-5)
    # Raw logprobs of this near-uniform random model are around -log(vocabulary size).
    assert all(v > -3.0 for row in rows for v in row.logprobs)


def test_processed_engine_refuses_raw(processed_engine) -> None:
    from detllm.errors import CaptureError

    with pytest.raises(CaptureError, match="this engine records processed logprobs"):
        processed_engine.generate(PROMPTS, Decoding(do_sample=False, max_new_tokens=2), top_k=1, logprob_mode="raw")

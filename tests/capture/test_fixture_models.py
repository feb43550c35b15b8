"""The committed fixture models are what fixtures/build_models.py builds, bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detllm.capture.models import checkout_root

ROOT = checkout_root()

pytestmark = pytest.mark.hf

MODELS = ("tiny-gpt2", "tiny-llama", "tiny-flip")


def _json_without_versions(path):
    value = json.loads(path.read_text(encoding="utf-8"))
    value.pop("transformers_version", None)
    return value


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("models")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "fixtures" / "build_models.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        env=env,
    )
    return out


@pytest.mark.parametrize("name", MODELS)
def test_weights_rebuild_bit_for_bit(rebuilt, name):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    committed = load_file(ROOT / "fixtures" / "models" / name / "model.safetensors")
    built = load_file(rebuilt / name / "model.safetensors")
    assert sorted(committed) == sorted(built)
    for key, tensor in committed.items():
        assert tensor.dtype == built[key].dtype, key
        assert tensor.shape == built[key].shape, key
        assert tensor.tobytes() == built[key].tobytes(), key


@pytest.mark.parametrize("name", MODELS)
def test_tokenizer_and_config_rebuild_identically(rebuilt, name):
    committed = ROOT / "fixtures" / "models" / name
    assert (committed / "tokenizer.json").read_bytes() == (rebuilt / name / "tokenizer.json").read_bytes()
    for file in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert _json_without_versions(committed / file) == _json_without_versions(rebuilt / name / file), file


def test_flip_model_has_near_duplicate_output_rows():
    pytest.importorskip("numpy")
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    weights = load_file(ROOT / "fixtures" / "models" / "tiny-flip" / "model.safetensors")["lm_head.weight"]
    even, odd = weights[2::2][: len(weights[3::2])], weights[3::2]
    relative = abs(odd - even).max() / abs(even).max()
    assert 0 < relative < 1e-5
    # The special tokens (EOS 0, PAD 1) are left independent.
    assert abs(weights[1] - weights[0]).max() > 1e-3


def test_models_are_small():
    for name in MODELS:
        size = sum(p.stat().st_size for p in (ROOT / "fixtures" / "models" / name).iterdir())
        assert size < 1.2 * 1024 * 1024, name

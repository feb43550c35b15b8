"""Model names, directories and fingerprints (no torch needed)."""

from __future__ import annotations

import json

import pytest

from detllm.capture.models import checkout_root, fingerprint, model_files, resolve_model, tokenizer_files
from detllm.capture.registry import BACKENDS, BackendConfig, load_backend
from detllm.errors import CaptureError, UsageError


def test_builtin_names_resolve_to_the_checkout():
    location = resolve_model("tiny-llama")
    assert location.path == checkout_root() / "fixtures" / "models" / "tiny-llama"
    assert location.revision is None


def test_paths_and_errors(tmp_path):
    assert resolve_model(str(tmp_path)).path == tmp_path.resolve()
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(CaptureError, match="is a file, not a model directory"):
        resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(CaptureError, match="model directory 'a/b/c' does not exist"):
        resolve_model("a/b/c")
    with pytest.raises(CaptureError, match=r"^a revision \('main'\) applies to hub ids, not to the directory "):
        resolve_model(str(tmp_path), "main")


def test_fingerprint_covers_content_not_library_versions(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text(json.dumps({"hidden_size": 8, "transformers_version": "4.45.0"}))
    (model / "tokenizer.json").write_text("{}")
    (model / "README.md").write_text("not part of the model")
    assert [p.name for p in model_files(model)] == ["config.json", "model.safetensors"]
    assert [p.name for p in tokenizer_files(model)] == ["tokenizer.json"]
    before = fingerprint(model_files(model))
    (model / "config.json").write_text(json.dumps({"transformers_version": "5.24.0", "hidden_size": 8}, indent=2))
    (model / "README.md").write_text("changed")
    assert fingerprint(model_files(model)) == before
    (model / "model.safetensors").write_bytes(b"weightz")
    assert fingerprint(model_files(model)) != before
    assert fingerprint([]) is None


def test_committed_fixtures_share_one_tokenizer():
    root = checkout_root() / "fixtures" / "models"
    prints = {fingerprint(tokenizer_files(root / name)) for name in ("tiny-gpt2", "tiny-llama", "tiny-flip")}
    assert len(prints) == 1
    assert len({fingerprint(model_files(root / name)) for name in ("tiny-gpt2", "tiny-llama", "tiny-flip")}) == 3


def test_backend_registry_errors(monkeypatch):
    with pytest.raises(UsageError, match="unknown backend 'onnx' \\(choose from "):
        load_backend("onnx", BackendConfig(model="tiny-llama"))
    monkeypatch.setitem(BACKENDS, "missing", "detllm.capture.no_such_backend:Backend")
    with pytest.raises(CaptureError, match="^the missing backend cannot be loaded: No module named 'detllm.capture.no_such_backend'$"):
        load_backend("missing", BackendConfig(model="tiny-llama"))

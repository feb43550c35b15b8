"""Shared set-up for capture tests: backends loaded once per test session."""

from __future__ import annotations

import pytest

from detllm.capture.models import checkout_root

ROOT = checkout_root()


@pytest.fixture(scope="session")
def load():
    """``load(name, **options)`` -> an HFBackend, cached for the whole test session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from detllm.capture.hf import HFBackend
    from detllm.capture.registry import BackendConfig

    cache: dict[tuple, HFBackend] = {}

    def get(name: str, **options):
        key = (name, tuple(sorted((k, str(v)) for k, v in options.items())))
        if key not in cache:
            cache[key] = HFBackend(BackendConfig(model=name, device="cpu", options=options))
        return cache[key]

    yield get
    for backend in cache.values():
        backend.close()

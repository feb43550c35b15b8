"""Set-up for the tests that drive a real vLLM engine (``-m vllm``)."""

from __future__ import annotations

import os

import pytest

# Read by vLLM's CPU platform when an engine starts: 1 GiB of KV cache is plenty for
# the tiny model, where the default would size it from the machine's memory.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# An engine core running in this process binds this process's OpenMP threads to the
# cores vLLM picks; more threads than those cores spin against each other (20x
# slower here). Engine processes of their own set their thread count themselves.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# vLLM logs every engine step of its start-up at INFO.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from _vllm_fixtures import tiny_llama

    return str(tiny_llama(tmp_path_factory.mktemp("models")))

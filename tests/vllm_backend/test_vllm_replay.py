"""Replay with in-process vLLM (``prompt_logprobs``) agrees with the hf replay of the same trace (``-m vllm``).

Tolerance: both replay a float32 trace in float32 on the same CPU, through other kernels
(vLLM's CPU attention and its own prompt-logprob path against transformers' forward), so
their logprobs agree to 1e-4 and, away from exact ties, their ranks and top-1 agree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _vllm_fixtures import ROOT, vllm_installed  # noqa: E402

if not vllm_installed():
    pytest.skip("vLLM is not installed", allow_module_level=True)

from detllm import open_trace, validate_trace  # noqa: E402
from detllm.diff import build_replay_report  # noqa: E402

pytestmark = pytest.mark.vllm

TOLERANCE = 1e-4
"""Largest |logprob difference| allowed between the vLLM and the hf replay of one trace (float32)."""


def detllm(*argv: str) -> None:
    done = subprocess.run([sys.executable, "-m", "detllm", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def rows(path: Path):  # type: ignore[no-untyped-def]
    with open_trace(path) as reader:
        return reader.header, list(reader)


def agreement(a: list, b: list) -> float:
    """The largest |logprob difference| of two replays of one trace; asserts what must be equal."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert (x.prompt_id, x.token_ids) == (y.prompt_id, y.token_ids)
        for i, (lx, ly) in enumerate(zip(x.logprobs, y.logprobs, strict=True)):
            worst = max(worst, abs(lx - ly))
            (best_x, vx), (best_y, _) = x.top_logprobs[i][0], y.top_logprobs[i][0]
            second = x.top_logprobs[i][1][1] if len(x.top_logprobs[i]) > 1 else -1e9
            if vx - second > 10 * TOLERANCE:  # not a near tie: the two agree on the order
                assert best_x == best_y and x.ranks[i] == y.ranks[i]
    return worst


def test_vllm_replay_agrees_with_the_hf_replay(model_dir: str, tmp_path: Path) -> None:
    source = tmp_path / "run"
    detllm("run", "--model", model_dir, "--backend", "hf", "--device", "cpu", "--max-new-tokens", "12", "--batch-size", "4", "--out", str(source))
    hf, vllm = tmp_path / "hf.jsonl", tmp_path / "vllm.jsonl"
    detllm("replay", str(source), "--model", model_dir, "--backend", "hf", "--device", "cpu", "--batch-size", "4", "--out", str(hf))
    detllm("replay", str(source), "--model", model_dir, "--backend", "vllm", "--device", "cpu", "--batch-size", "4",
           "--backend-option", "max_model_len=256", "--backend-option", "enable_prefix_caching=true", "--out", str(vllm))  # fmt: skip
    assert validate_trace(vllm).valid
    header, vllm_rows = rows(vllm)
    _, hf_rows = rows(hf)
    assert header.backend.name == "vllm" and header.version == "1.1"
    assert header.backend_settings["replay"]["prefix_cache"].startswith("bypassed")
    assert header.backend_settings["enable_prefix_caching"] is True
    assert agreement(hf_rows, vllm_rows) < TOLERANCE
    # The cache was on: values that came from it stale would not agree with hf, nor put the
    # greedy tokens of the source first.
    report = build_replay_report(source, vllm)
    assert report.summary.max_abs_delta is not None and report.summary.max_abs_delta < TOLERANCE

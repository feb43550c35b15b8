"""Determinism controls: what is applied, what is refused, and that it is all undone."""

from __future__ import annotations

import json
import os
import random

import pytest

from detllm.capture.determinism import DeterminismControls
from detllm.cli import main
from detllm.errors import DeterminismUnavailableError, UsageError

pytestmark = pytest.mark.hf


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def cpu_only(torch):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")


def _state(torch):
    return {
        "random": random.getstate(),
        "torch_rng": torch.get_rng_state().tolist(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
        "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def test_controls_apply_and_restore_global_state(torch, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.set_float32_matmul_precision("high")
    try:
        random.seed(99)
        torch.manual_seed(99)
        before = _state(torch)
        with DeterminismControls("strict", seed=3, threads=1, device="cpu") as report:
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.get_num_threads() == 1
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
            draw = random.random()
            random.seed(3)
            assert draw == random.random()
        assert _state(torch) == before
    finally:
        torch.set_float32_matmul_precision("highest")
    assert report.complete
    assert report.applied["torch_num_threads"] == 1
    assert report.applied["torch_manual_seed"] == 3
    assert report.applied["torch_use_deterministic_algorithms"] is True


def test_cuda_controls_are_listed_as_not_needed_on_cpu(cpu_only):
    with DeterminismControls("strict", seed=0, device="auto") as report:
        pass
    assert report.complete
    for name in ("cudnn_deterministic", "cudnn_benchmark", "cuda_matmul_allow_tf32", "cudnn_allow_tf32", "torch_cuda_manual_seed_all"):
        assert report.unavailable[name] == "not needed: no CUDA device"
    assert report.missing() == {}
    assert report.to_header().unavailable == report.unavailable


def test_strict_refuses_when_a_needed_control_is_missing(torch, monkeypatch):
    monkeypatch.delattr(torch, "use_deterministic_algorithms")
    controls = DeterminismControls("strict", seed=0, device="cpu")
    with pytest.raises(DeterminismUnavailableError) as info:
        controls.apply()
    assert str(info.value) == (
        f"strict mode: cannot apply torch_use_deterministic_algorithms: torch {torch.__version__} has no "
        "use_deterministic_algorithms; use --mode best-effort to run without it"
    )
    assert controls._undo == []  # nothing was applied before refusing


def test_best_effort_goes_on_and_says_what_is_missing(torch, monkeypatch):
    monkeypatch.delattr(torch, "use_deterministic_algorithms")
    with DeterminismControls("best-effort", seed=0, device="cpu") as report:
        pass
    assert not report.complete
    assert report.missing() == {
        "torch_use_deterministic_algorithms": f"torch {torch.__version__} has no use_deterministic_algorithms"
    }
    assert report.to_dict()["complete"] is False


def test_off_applies_nothing(torch):
    before = _state(torch)
    with DeterminismControls("off", seed=5, threads=1, device="cpu") as report:
        assert _state(torch) == before
    assert (report.mode, report.applied, report.unavailable, report.seed) == ("off", {}, {}, None)


def test_user_cublas_setting_is_kept(torch, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with DeterminismControls("strict", seed=0, device="cpu") as report:
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert report.applied["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_bad_arguments():
    with pytest.raises(UsageError, match="unknown determinism mode 'loose'"):
        DeterminismControls("loose")
    with pytest.raises(UsageError, match="threads must be at least 1, got 0"):
        DeterminismControls("strict", threads=0)


def test_cli_strict_refusal_exits_2(torch, monkeypatch, tmp_path, capsys):
    monkeypatch.delattr(torch, "use_deterministic_algorithms")
    out = tmp_path / "run"
    code = main(["run", "--model", "tiny-llama", "--device", "cpu", "--mode", "strict", "--max-new-tokens", "2", "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"detllm: strict mode: cannot apply torch_use_deterministic_algorithms: torch {torch.__version__} has no "
        "use_deterministic_algorithms; use --mode best-effort to run without it\n"
    )
    assert not out.exists()


def test_cli_best_effort_warns_and_records(torch, monkeypatch, tmp_path, capsys):
    monkeypatch.delattr(torch, "use_deterministic_algorithms")
    out = tmp_path / "run"
    code = main(["run", "--model", "tiny-llama", "--device", "cpu", "--prompt", "Hi", "--max-new-tokens", "2", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "detllm: warning: determinism control torch_use_deterministic_algorithms not applied: "
        f"torch {torch.__version__} has no use_deterministic_algorithms\n"
    )
    assert "determinism best-effort (incomplete: see determinism_applied.json)" in captured.out
    document = json.loads((out / "determinism_applied.json").read_text())
    assert document["complete"] is False
    assert "torch_use_deterministic_algorithms" in document["unavailable"]

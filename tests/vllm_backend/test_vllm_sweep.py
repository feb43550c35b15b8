"""``detllm check --sweep`` on a real vLLM engine: prefix caching (cold and warm),
chunked prefill and max_num_seqs, each value on an engine of its own, read back.

The check runs as the command line does (``python -m detllm``). Which settings change
the outputs depends on the CPU's kernels, so the tests compare the report with the
traces themselves and with the engine's own counters, not with fixed results.
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

from detllm import read_header  # noqa: E402
from detllm.capture._sweep_settings import CHUNK_TOKENS  # noqa: E402
from detllm.diff import diff_traces  # noqa: E402
from detllm.diff.model import CheckReport  # noqa: E402
from detllm.report import load_report  # noqa: E402

pytestmark = pytest.mark.vllm

BLOCK = 32
"""A KV-cache block smaller than vLLM's CPU default (128), so the prompts fill whole blocks."""

TEXTS = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch and the sun sets slowly behind the hills.",
    "In a small village by the sea, the fishermen mended their nets every morning and told stories of storms they had survived long ago.",
    "A recipe for bread: mix flour, water, salt and yeast, knead the dough for ten minutes, let it rise, then bake it until golden brown.",
    "Once upon a time a robot learned to paint; it started with circles and lines, and slowly its pictures began to look like the sky.",
]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _check(model_dir: str, base: Path, *options: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``detllm check`` of the four prompts on vLLM, 8 tokens each, two runs, in a process of its own."""
    prompts = base / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = base / "check"
    command = [
        sys.executable, "-m", "detllm", "check", "--model", model_dir, "--backend", "vllm", "--device", "cpu",
        "--runs", "2", "--max-new-tokens", "8", "--prompt-file", str(prompts),
        "--backend-option", "max_model_len=256", *options, "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=1200, check=False)
    return out, done


@pytest.fixture(scope="module")
def swept(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    out, done = _check(
        model_dir, tmp_path_factory.mktemp("vllm-sweep"), "--batch-size", "1", "--backend-option", f"block_size={BLOCK}",
        "--sweep", "enable_prefix_caching=true,false", "--sweep", "enable_chunked_prefill=true",
        "--sweep", "max_num_seqs=4", "--sweep", "batch_invariant=true",
    )  # fmt: skip
    assert done.returncode in (0, 1, 2), done.stderr[-2000:]
    return out, done.returncode, done.stdout


def test_each_value_ran_on_its_own_engine_and_was_read_back(swept: tuple[Path, int, str]) -> None:
    out, code, _ = swept
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport) and report.sweep is not None
    assert code == report.exit_code()
    variants = {v.name: v for v in report.sweep.variants}
    assert list(variants) == ["enable_prefix_caching=true", "enable_prefix_caching=false", "enable_chunked_prefill=true",
                              "max_num_seqs=4", "batch_invariant=true"]  # fmt: skip
    for name in ("enable_prefix_caching=true", "enable_prefix_caching=false", "enable_chunked_prefill=true", "max_num_seqs=4"):
        variant = variants[name]
        assert variant.status == "run", (name, variant.reason)
        assert variant.fresh_process
        for comparison in variant.comparisons:
            header = read_header(out / "traces" / f"{comparison.trace}.jsonl")
            settings = header.backend_settings
            for key, value in variant.settings.items():
                assert settings[key] == value == variant.applied[key], (name, key)
            # A process of its own: another engine core than the baseline's.
            assert settings["block_size"] == BLOCK
    chunked = variants["enable_chunked_prefill=true"].applied
    assert chunked == {"enable_chunked_prefill": True, "max_num_batched_tokens": CHUNK_TOKENS}
    # The platform has no batch-invariant mode: not run, and the sweep cannot pass.
    invariant = variants["batch_invariant=true"]
    assert invariant.status == "not_run" and "no batch-invariant mode on CPU" in (invariant.reason or "")
    assert report.sweep.verdict.stable is not True and code != 0


def test_the_warm_pass_hit_the_prefix_cache(swept: tuple[Path, int, str]) -> None:
    out, _, _ = swept
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport) and report.sweep is not None
    variant = next(v for v in report.sweep.variants if v.name == "enable_prefix_caching=true")
    counters = json.loads((out / "sweep.json").read_text())["variants"][0]["prefix_cache"]
    assert counters["block_size"] == BLOCK
    probe = variant.prefix_cache
    assert probe is not None and probe.prompts == len(TEXTS)
    # vLLM's own counters: every warm request took whole blocks from the cache, no cold one did.
    assert all(n >= BLOCK and n % BLOCK == 0 for n in counters["warm"].values()), counters
    assert all(n == 0 for n in counters["cold"].values()), counters
    assert probe.missed == [] and probe.warm_hits == len(TEXTS)
    assert [c.role for c in variant.comparisons] == ["cold", "warm"]


def test_the_table_follows_the_traces(swept: tuple[Path, int, str]) -> None:
    out, _, stdout = swept
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport) and report.sweep is not None
    baseline = out / report.sweep.baseline
    changed = []
    for variant in report.sweep.variants:
        for comparison in variant.comparisons:
            diff = diff_traces(baseline, out / "traces" / f"{comparison.trace}.jsonl")
            diverging = [r.prompt_id for r in diff.prompts if r.status not in ("identical", "logprobs_differ")]
            assert comparison.divergent == diverging
            assert comparison.tokens_stable == len(TEXTS) - len(diverging)
            if diverging and variant.name not in changed:
                changed.append(variant.name)
    assert report.sweep.verdict.changed == changed
    for variant in report.sweep.variants:
        assert variant.name in stdout
    # The measurement, for the record: which settings changed the output on this machine.
    print({v.name: (v.status, v.classification, [c.divergent for c in v.comparisons]) for v in report.sweep.variants})


@pytest.fixture(scope="module")
def swept_in_batches(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Chunked prefill at batch size 4: 16 tokens a step cannot start four prompts of
    about 25 tokens together, so vLLM spreads each batch over several steps."""
    out, done = _check(model_dir, tmp_path_factory.mktemp("vllm-sweep-batch"), "--batch-size", "4",
                       "--sweep", "enable_chunked_prefill=true")
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return out, done.stdout


def test_chunked_prefill_at_a_batch_size_above_one_runs_and_says_how_batches_started(
    swept_in_batches: tuple[Path, str],
) -> None:
    from detllm.reader import open_trace

    out, stdout = swept_in_batches
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport) and report.sweep is not None
    (variant,) = report.sweep.variants
    assert variant.status == "run", variant.reason
    (comparison,) = variant.comparisons
    with open_trace(out / "traces" / f"{comparison.trace}.jsonl") as reader:
        assert reader.header.version == "1.2" and reader.header.batch.size == 4
        rows = list(reader)
    assert all(r.batch is not None and r.batch.step is not None for r in rows)
    steps = [r.batch.step for r in rows if r.batch is not None]
    # vLLM's own first-scheduled times: the four prompts started in turn, the first at once.
    assert min(steps) == 0 and len(set(steps)) > 1
    assert comparison.scheduled_steps == max(steps) + 1
    with open_trace(out / report.sweep.baseline) as reader:
        # The baseline's token budget starts every batch in one step: nothing to record.
        assert reader.header.version == "1.0"
        assert all(r.batch is not None and r.batch.step is None for r in reader)
    assert f"spread over up to {comparison.scheduled_steps} engine steps" in " ".join(stdout.split())
    print({"steps": steps, "divergent": comparison.divergent, "classification": comparison.classification})

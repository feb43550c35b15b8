"""``detllm check --sweep`` and ``detllm bisect`` on tiny-llama, for real (CPU).

Measured on the development machine (x86_64, torch 2.13 CPU), tiny-llama, greedy,
8 built-in prompts: bfloat16 against float32 changes the tokens of most prompts;
2 threads against 1, batch size 8 against 1 and eager against sdpa attention change
logprobs only. The bisect test plants that: B differs from A in dtype, thread count
and batch size, and only the dtype changes tokens. Where a CPU's kernels make threads
or batch size flip tokens too, the assertions that follow the traces still hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from detllm.cli import main
from detllm.diff import diff_traces
from detllm.diff.model import CheckReport
from detllm.report import load_report

pytestmark = pytest.mark.hf

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "formats" / "report-v1.schema.json").read_text())
FAST = ["--model", "tiny-llama", "--device", "cpu", "--max-new-tokens", "16"]


@pytest.fixture(autouse=True, scope="module")
def _needs_torch():
    # Module scope, so it skips before the module-scoped runs below need a model.
    pytest.importorskip("torch")


def _token_divergent(left: Path, right: Path) -> list[str]:
    return [r.prompt_id for r in diff_traces(left, right).prompts if r.status not in ("identical", "logprobs_differ")]


@pytest.fixture(scope="module")
def sweep_check(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("sweep") / "check"
    code = main(["check", *FAST, "--runs", "2", "--batch-size", "1", "--threads", "1", "-q",
                 "--sweep", "dtype=bfloat16", "--sweep", "threads=1,2", "--sweep", "attn_implementation=eager",
                 "--out", str(out)])  # fmt: skip
    return out, code


def test_hf_sweep_reads_each_setting_back(sweep_check: tuple[Path, int]) -> None:
    out, code = sweep_check
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport) and report.sweep is not None
    assert code == report.exit_code()
    jsonschema.validate(json.loads((out / "report.json").read_text()), SCHEMA)
    variants = {v.name: v for v in report.sweep.variants}
    assert list(variants) == ["dtype=bfloat16", "threads=1", "threads=2", "attn_implementation=eager"]
    assert variants["threads=1"].status == "baseline"  # the baseline runs with 1 thread
    assert variants["dtype=bfloat16"].applied == {"dtype": "bfloat16"}
    assert variants["threads=2"].applied == {"threads": 2} and not variants["threads=2"].fresh_process
    assert variants["attn_implementation=eager"].applied == {"attn_implementation": "eager"}
    assert variants["dtype=bfloat16"].fresh_process and variants["attn_implementation=eager"].fresh_process
    baseline = out / report.sweep.baseline
    for name in ("dtype=bfloat16", "threads=2", "attn_implementation=eager"):
        (comparison,) = variants[name].comparisons
        assert variants[name].status == "run"
        assert comparison.divergent == _token_divergent(baseline, out / "traces" / f"{comparison.trace}.jsonl")
        assert (variants[name].stable is False) == bool(comparison.divergent)
    # bfloat16 rounds this model's logits enough to flip greedy tokens (6 of 8 prompts here).
    assert variants["dtype=bfloat16"].comparisons[0].divergent
    assert report.sweep.verdict.stable is False and code == 1
    assert "dtype=bfloat16" in report.sweep.verdict.changed


def test_sweep_renders_a_table(sweep_check: tuple[Path, int]) -> None:
    out, _ = sweep_check
    text = (out / "report.txt").read_text()
    markdown = (out / "report.md").read_text()
    assert "sweep: FAIL" in text.splitlines()[1]
    assert "Sweep (one-at-a-time; each variant against the baseline traces/bs1-run0.jsonl): FAIL" in text
    row = next(line for line in text.splitlines() if line.lstrip().startswith("threads=1 "))
    assert row.split()[:2] == ["threads=1", "baseline"]
    assert "| setting=value | status | tokens stable | logprobs stable | divergent prompts | classification |" in markdown
    assert "| `dtype=bfloat16` | run |" in markdown


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("planted")
    a, b = base / "a", base / "b"
    assert main(["run", *FAST, "--threads", "1", "--batch-size", "1", "--out", str(a)]) == 0
    assert main(["run", *FAST, "--threads", "2", "--batch-size", "8", "--dtype", "bfloat16", "--out", str(b)]) == 0
    return a, b


def test_bisect_names_the_planted_cause_and_clears_the_others(planted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = planted
    observed = _token_divergent(a / "trace.jsonl", b / "trace.jsonl")
    assert observed  # the dtype alone flips tokens on this model
    out = tmp_path / "bisect"
    code = main(["bisect", str(a), str(b), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    document = json.loads((out / "report.json").read_text())
    jsonschema.validate(document, SCHEMA)
    assert [d["setting"] for d in document["differences"]] == ["dtype", "threads", "batch_size"]
    assert document["observed"]["divergent"] == observed
    assert document["control"]["outcome"] == "cleared"
    runs = {r["name"]: r for r in document["ranking"]}
    assert set(runs) == {"dtype=bfloat16", "threads=2", "batch_size=8"}  # no pairs: one setting explains it
    for name, run in runs.items():
        rerun = _token_divergent(a / "trace.jsonl", out / run["trace"])
        assert run["divergent"] == rerun
        assert run["reproduced"] == len(set(rerun) & set(observed)) and run["of"] == len(observed)
    assert runs["dtype=bfloat16"]["outcome"] == "reproduces"
    assert document["ranking"][0]["name"] == "dtype=bfloat16"
    assert document["verdict"]["explained_by"] == ["dtype"]
    # On this CPU, thread count and batch size change logprobs only: cleared.
    assert runs["threads=2"]["outcome"] == runs["batch_size=8"]["outcome"] == "cleared"
    words = " ".join(captured.out.split())
    assert "Cleared (no prompt diverges with it alone): threads=2, batch_size=8." in words
    assert f"dtype=bfloat16 alone reproduces {len(observed)} of {len(observed)} diverging prompts" in words
    assert "detllm bisect: [1/16] control" in captured.err
    assert (out / "report.md").read_text().startswith("### detLLM bisect: `dtype`")
    assert '<h1>detLLM bisect: <code id="classification">dtype</code></h1>' in (out / "report.html").read_text()


def test_bisect_keeps_to_its_budget(planted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = planted
    out = tmp_path / "bisect"
    assert main(["bisect", str(a), str(b), "--max-runs", "1", "--out", str(out), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["budget"] == {"max_runs": 1, "used": 1, "untried": ["dtype=bfloat16", "threads=2", "batch_size=8"]}
    assert document["ranking"] == [] and document["verdict"]["explained_by"] is None
    assert "Not tried within --max-runs: dtype=bfloat16, threads=2, batch_size=8." in document["verdict"]["text"]


def test_bisect_of_agreeing_runs_reruns_nothing(planted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = planted
    out = tmp_path / "bisect"
    assert main(["bisect", str(a), str(a), "--out", str(out), "-q"]) == 0
    document = json.loads((out / "report.json").read_text())
    assert document["budget"]["used"] == 0 and document["differences"] == []
    assert document["verdict"]["text"] == "A and B agree on all 8 prompts: nothing to bisect."


def test_bisect_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bisect", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"detllm: {tmp_path / 'nope' / 'run_config.json'}: no such file (give a run or check directory)\n"
    assert not (tmp_path / "o").exists()


def test_the_python_check_sweeps_too(tmp_path: Path) -> None:
    import detllm

    result = detllm.check("tiny-llama", None, runs=2, batch_sizes=[1], compositions=[], sweep=["dtype=bfloat16"],
                          max_new_tokens=16, device="cpu", out=tmp_path / "c")
    sweep = result.report.sweep
    assert sweep is not None and [v.name for v in sweep.variants] == ["dtype=bfloat16"]
    (variant,) = sweep.variants
    assert variant.applied == {"dtype": "bfloat16"} and variant.fresh_process and variant.stable is False
    assert variant.comparisons[0].divergent == _token_divergent(tmp_path / "c" / sweep.baseline,
                                                                tmp_path / "c" / "traces" / f"{variant.comparisons[0].trace}.jsonl")
    assert result.exit_code == 1

"""Sweep planning and the read-back of applied settings, without a model.

The engine is played by a stand-in that writes the trace a real run would write, with
the settings it reports in its header: what a sweep makes of a setting the engine
ignored, of one the platform lacks, and of values that are the baseline's own.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from detllm.capture._sweep_settings import CHUNK_TOKENS, SETTINGS, parse_sweep
from detllm.capture.runner import RunConfig
from detllm.capture.sweep import plan_sweep, run_sweep
from detllm.diff import DiffOptions
from detllm.errors import UsageError
from detllm.diff._sweep import build_sweep_report
from detllm.diff._sweep_model import sweep_answer
from detllm.writer import TraceWriter
from tests.factories import make_header, make_row

VLLM = RunConfig(model="tiny-llama", backend="vllm", batch_size=2)


def _trace(path: Path, settings: dict, rows: int = 2, flip: str | None = None, dtype: str = "float32") -> None:
    header = make_header(backend_settings=settings, dtype=dtype)
    with TraceWriter(path, header) as writer:
        for i in range(rows):
            pid = f"p{i}"
            row = make_row(pid)
            if pid == flip:
                row = make_row(pid, token_ids=[99, 11, 12, 13])
            writer.write(row)


ENGINE = {"platform": "cpu", "vllm": "0.32.0", "enable_prefix_caching": True, "enable_chunked_prefill": False,
          "max_num_seqs": 2, "max_num_batched_tokens": 8192, "enforce_eager": True}


class Engine:
    """Writes each variant's trace with the header a vLLM engine would report."""

    def __init__(self, ignores: str | None = None, flips: dict[str, str] | None = None) -> None:
        self.ignores = ignores
        self.flips = flips or {}
        self.runs: list[dict] = []

    def __call__(self, directory: Path, config: RunConfig, prompts, run) -> None:
        self.runs.append(dict(config.options))
        settings = {**ENGINE, **{k: v for k, v in config.options.items() if k != self.ignores}}
        flip = next((p for k, p in self.flips.items() if config.options.get(k.split("=")[0]) == msgspec.json.decode(k.split("=")[1])), None)
        _trace(directory / run.path, settings, flip=flip, dtype=config.dtype)


@pytest.fixture
def check_dir(tmp_path: Path) -> Path:
    (tmp_path / "traces").mkdir()
    _trace(tmp_path / "traces" / "bs2-run0.jsonl", ENGINE)
    return tmp_path


def test_values_are_parsed_by_the_settings_table() -> None:
    setting, values = parse_sweep("enable_chunked_prefill=true,False", "vllm")
    assert setting is SETTINGS["vllm"]["enable_chunked_prefill"] and values == [True, False]
    assert parse_sweep("max_num_seqs=1,8", "vllm")[1] == [1, 8]
    assert parse_sweep("threads=2", "hf")[1] == [2]


@pytest.mark.parametrize(
    ("item", "backend", "message"),
    [
        ("enforce_eager=true", "hf", "--sweep enforce_eager: not a setting the hf backend can sweep (choose from attn_implementation, dtype, threads)"),
        ("max_num_seqs=0", "vllm", "--sweep max_num_seqs: value '0': expected an integer of at least 1"),
        ("enforce_eager=maybe", "vllm", "--sweep enforce_eager: value 'maybe': expected true or false"),
        ("dtype=fp8", "hf", "--sweep dtype: value 'fp8': expected float32, bfloat16 or float16"),
        ("threads=2,2", "hf", "--sweep threads: value '2' given twice"),
        ("threads", "hf", "--sweep 'threads': expected KEY=V1,V2,..."),
    ],
)
def test_bad_sweeps_get_one_line(item: str, backend: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_sweep(item, backend)
    assert str(caught.value) == message


def test_one_at_a_time_and_grid() -> None:
    one = plan_sweep(VLLM, ["enforce_eager=true,false", "max_num_seqs=4"])
    assert [v.name for v in one] == ["enforce_eager=true", "enforce_eager=false", "max_num_seqs=4"]
    grid = plan_sweep(VLLM, ["enforce_eager=true,false", "max_num_seqs=4,8"], "grid")
    assert [v.name for v in grid] == [
        "enforce_eager=true, max_num_seqs=4", "enforce_eager=true, max_num_seqs=8",
        "enforce_eager=false, max_num_seqs=4", "enforce_eager=false, max_num_seqs=8",
    ]  # fmt: skip
    assert grid[3].config.options == {"enforce_eager": False, "max_num_seqs": 8}
    with pytest.raises(UsageError, match="given twice"):
        plan_sweep(VLLM, ["max_num_seqs=4", "max_num_seqs=8"])


def test_chunked_prefill_comes_with_a_small_token_budget() -> None:
    (on, off) = plan_sweep(VLLM, ["enable_chunked_prefill=true,false"])
    assert on.changes == {"options": {"enable_chunked_prefill": True, "max_num_batched_tokens": CHUNK_TOKENS}}
    assert off.changes == {"options": {"enable_chunked_prefill": False}}
    given = msgspec.structs.replace(VLLM, options={"max_num_batched_tokens": 32})
    assert plan_sweep(given, ["enable_chunked_prefill=true"])[0].config.options["max_num_batched_tokens"] == 32


def test_hf_settings_go_where_they_belong() -> None:
    hf = RunConfig(model="tiny-llama")
    dtype, threads, attn = plan_sweep(hf, ["dtype=bfloat16", "threads=2", "attn_implementation=eager"])
    assert dtype.config.dtype == "bfloat16" and dtype.fresh_engine
    assert threads.config.threads == 2 and not threads.fresh_engine
    assert attn.config.options == {"attn_implementation": "eager"}


def test_a_setting_the_engine_ignored_is_not_applied(check_dir: Path) -> None:
    engine = Engine(ignores="enforce_eager")
    variants = plan_sweep(VLLM, ["enforce_eager=false", "max_num_seqs=4"])
    record = run_sweep(check_dir, "traces/bs2-run0.jsonl", variants, [], "one-at-a-time", engine)
    ignored, applied = record.variants
    assert ignored.status == "not_applied"
    assert ignored.reason == "enforce_eager=false asked for, but the engine reports true"
    assert applied.status == "run" and applied.applied == {"max_num_seqs": 4}
    report = build_sweep_report(check_dir, DiffOptions())
    assert report is not None
    assert [v.stable for v in report.variants] == [None, True]
    assert sweep_answer(report, 1) is None  # never a pass


def test_unsupported_and_baseline_values_are_not_run(check_dir: Path) -> None:
    engine = Engine()
    variants = plan_sweep(VLLM, ["batch_invariant=true", "max_num_seqs=2,4"])
    record = run_sweep(check_dir, "traces/bs2-run0.jsonl", variants, [], "one-at-a-time", engine)
    invariant, same, four = record.variants
    assert invariant.status == "not_run" and "no batch-invariant mode on CPU" in (invariant.reason or "")
    assert same.status == "baseline"
    assert four.status == "run"
    assert engine.runs == [{"max_num_seqs": 4}]
    report = build_sweep_report(check_dir, DiffOptions())
    assert report is not None and report.verdict.stable is None
    assert "batch_invariant=true: not run (vLLM 0.32.0 has no batch-invariant mode on CPU" in report.verdict.text


def test_a_variant_that_changes_tokens_fails_the_sweep(check_dir: Path) -> None:
    engine = Engine(flips={"max_num_seqs=4": "p1"})
    variants = plan_sweep(VLLM, ["max_num_seqs=4,8"])
    run_sweep(check_dir, "traces/bs2-run0.jsonl", variants, [], "one-at-a-time", engine)
    report = build_sweep_report(check_dir, DiffOptions())
    assert report is not None
    four, eight = report.variants
    assert four.stable is False and four.comparisons[0].divergent == ["p1"]
    assert four.comparisons[0].tokens_stable == 1 and four.comparisons[0].prompts == 2
    assert eight.stable is True
    assert report.verdict.changed == ["max_num_seqs=4"] and report.verdict.stable is False


def test_check_refuses_a_bad_sweep_before_loading_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from detllm.cli import main

    out = tmp_path / "check"
    assert main(["check", "--model", "tiny-llama", "--sweep", "max_num_seqs=4", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "detllm: --sweep max_num_seqs: not a setting the hf backend can sweep (choose from attn_implementation, dtype, threads)\n"
    )
    assert not out.exists()


def test_what_an_engine_said_is_escaped_in_every_rendering(check_dir: Path) -> None:
    from detllm.errors import CaptureError
    from detllm.report._sweep_render import sweep_markdown, sweep_text

    def refuses(directory: Path, config: RunConfig, prompts, run) -> None:
        raise CaptureError("vLLM said \x1b[2J| <b>no</b>\nsecond line")

    variants = plan_sweep(VLLM, ["attention_backend=X\x1b[31m"])
    record = run_sweep(check_dir, "traces/bs2-run0.jsonl", variants, [], "one-at-a-time", refuses)
    assert record.variants[0].status == "not_run"
    report = build_sweep_report(check_dir, DiffOptions())
    assert report is not None
    text = "\n".join(sweep_text(report, 1))
    markdown = "\n".join(sweep_markdown(report, 1))
    for rendered in (text, markdown):
        assert "\x1b" not in rendered and "second" in rendered.replace("\n", " ")
    assert "\\x1b[2J" in text and "\\nsecond" in text
    assert "said \\\\x1b\\[2J\\| " in markdown  # a backslash shown as one, a pipe that cannot end a cell
    assert "| NOT RUN |" in markdown

"""``detllm check`` and ``detllm pack`` on the fixture models, for real (CPU, seconds each).

Whether batch size flips a token depends on the CPU's kernels, so the tests that
see flips compare the report with the traces themselves rather than with fixed
token indices; ``tests/diff/test_check_report.py`` has a recorded check for exact
expectations.
"""

from __future__ import annotations

import io
import html
import json
import shlex
from pathlib import Path

import pytest

import detllm
from detllm import open_trace
from detllm.capture.check import default_compositions, parse_batch_sizes
from detllm.cli import main
from detllm.cli._progress import Progress
from detllm.diff import DiffOptions, diff_traces
from detllm.errors import UsageError
from detllm.diff.model import CheckReport
from detllm.report import load_report

pytestmark = pytest.mark.hf

FAST = ["--device", "cpu", "--max-new-tokens", "8"]


@pytest.fixture(autouse=True, scope="module")
def _needs_torch():
    # Module scope: pytest sets up autouse fixtures first within a scope, so this skips
    # before the module-scoped ``flip`` check below tries to load a model.
    pytest.importorskip("torch")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def row_lines(path: Path) -> list[bytes]:
    with open_trace(path) as reader:
        return [raw for _, raw in reader.raw_rows()]


def rows(path: Path) -> dict:
    with open_trace(path) as reader:
        return {row.prompt_id: row for row in reader}


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


@pytest.fixture(scope="module")
def flip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-flip check at batch sizes 1 and 4, written by the command line."""
    out = tmp_path_factory.mktemp("flip") / "check"
    code = main(["check", "--model", "tiny-flip", *FAST, "--batch-size", "1,4", "--mode", "strict", "--out", str(out), "-q"])
    report = load_report(out / "report.json")
    assert code == report.exit_code()
    return out


def test_repeats_are_tier1_and_tier2_repeatable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "check"
    argv = ["check", "--model", "tiny-llama", *FAST, "--runs", "3", "--batch-size", "4", "--compositions", "none",
            "--tier", "2", "--mode", "strict", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(
        "detllm check: identical\nTier 1 repeatable: pass   Tier 2 repeatable: pass   batch invariant: not asked\n"
    )
    assert captured.err.endswith(f"detllm: check directory {out}\n")
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport)
    assert (report.verdict.tier1, report.verdict.tier2, report.verdict.batch_invariant) == (True, True, None)
    assert report.verdict.claim == "tier2"
    traces = [out / "traces" / f"bs4-run{i}.jsonl" for i in range(3)]
    assert sorted(p.name for p in (out / "traces").iterdir()) == [p.name for p in traces]
    assert row_lines(traces[1]) == row_lines(traces[0]) == row_lines(traces[2])  # the bytes agree, as the report says
    for name in ("env.json", "run_config.json", "determinism_applied.json", "report.txt", "report.md", "diffs/first_divergence.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "run_config.json").read_text())
    assert config["command"] == ["detllm", *argv]
    page = (out / "report.html").read_text()
    assert '<section id="verdict" class="banner pass" data-classification="identical" data-exit="0">' in page
    assert f'<pre id="command">{html.escape(shlex.join(config["command"]), quote=True)}</pre>' in page
    assert config["check"]["runs"] == 3 and config["check"]["compositions"] == []
    assert config["check"]["tier"] == 2

    # Nothing diverges: the pack refuses, in one line.
    assert main(["pack", str(out), "--out", str(tmp_path / "pack")]) == 2
    assert capsys.readouterr().err == (
        f"detllm: {out}: no prompt diverges from run 0 in its tokens or logprobs (Tier 2); nothing to pack "
        "(--all packs every prompt)\n"
    )


def test_batch_sweep_finds_the_divergences_in_the_traces(flip: Path) -> None:
    report = load_report(flip / "report.json")
    assert isinstance(report, CheckReport)
    traces = {run.name: rows(flip / run.trace.path) for run in report.runs}
    assert report.verdict.tier1 is True and report.verdict.tier2 is True  # one process, same batch size: bitwise
    found = {(p.prompt_id, d.comparison): d.result for p in report.prompts for d in p.divergences}
    flips = 0
    for index, comparison in enumerate(report.comparisons):
        left, right = traces[report.runs[comparison.left].name], traces[report.runs[comparison.right].name]
        for pid, row in left.items():
            assert row.input_token_ids == right[pid].input_token_ids  # padding never reaches the inputs
            step = first_difference(row.token_ids, right[pid].token_ids)
            result = found.get((pid, index))
            if step is None:
                assert result is None or result.status == "logprobs_differ"
                continue
            flips += 1
            assert result is not None and result.divergence is not None and result.divergence.index == step
            assert result.classification in ("near_tie_flip", "inconclusive")
    assert report.verdict.batch_invariant is (flips == 0)
    assert report.exit_code() == (1 if flips else 0)


def test_padding_never_shows_as_a_difference(tmp_path: Path) -> None:
    """tiny-llama's margins are wide: at batch size 8 (left padding, an attention mask)
    every prompt keeps its tokens and inputs, whichever prompts share its batch."""
    result = detllm.check("tiny-llama", None, batch_sizes=[1, 8], runs=2, max_new_tokens=12, device="cpu", out=tmp_path / "c")
    report = result.report
    assert result.batch_invariant is True and result.passed and result.exit_code == 0
    for comparison in report.comparisons:
        assert comparison.statuses["inputs_differ"] == 0
        assert comparison.statuses["tokens_diverge"] == comparison.statuses["stopped_early"] == 0
    lengths = {run.name: {pid: len(r.input_token_ids) for pid, r in rows(path).items()} for run, path in
               zip(result.plan.traces, result.trace_paths.values())}  # fmt: skip
    assert len({json.dumps(v, sort_keys=True) for v in lengths.values()}) == 1
    assert len(set(lengths["bs1-run0"].values())) > 1  # prompts of different lengths, so batches were padded


def test_seeded_sampling_repeats_and_another_seed_is_sampling(tmp_path: Path) -> None:
    settings = dict(do_sample=True, temperature=0.9, max_new_tokens=8, device="cpu", batch_sizes=[1, 4], runs=2)
    five = detllm.check("tiny-llama", None, seed=5, out=tmp_path / "five", **settings)
    six = detllm.check("tiny-llama", None, seed=6, out=tmp_path / "six", **settings)
    for result in (five, six):
        assert (result.tier1, result.tier2) == (True, True)
        assert result.report.runs[0].trace.do_sample is True
    other = diff_traces(five.trace_paths["bs1-run0"], six.trace_paths["bs1-run0"], DiffOptions())
    assert other.classification == "sampling_divergence"
    assert other.setup.attribution.cause == "different_setup"
    assert {r.classification for r in other.diverging()} <= {"sampling_divergence"}


@pytest.mark.slow
def test_isolated_repeats_run_in_their_own_processes(tmp_path: Path) -> None:
    out = tmp_path / "iso"
    result = detllm.check(
        "tiny-llama", ["Hello", "The capital of France is"], batch_sizes=[1, 2], compositions=[], runs=2,
        isolate=True, max_new_tokens=6, device="cpu", mode="strict", out=out,
    )  # fmt: skip
    report = result.report
    assert [(r.name, r.isolated) for r in report.runs] == [("bs1-run0", True), ("bs1-run1", True), ("bs2-in-order", False)]
    assert report.check.isolate is True
    assert result.exit_code == 0 and result.tier2 is True
    for name in ("bs1-run0", "bs1-run1"):
        own = out / "isolated" / name
        assert json.loads((own / "run_config.json").read_text())["command"][:2] == ["detllm", "run"]
        assert (own / "determinism_applied.json").is_file() and not (own / "trace.jsonl").exists()
    assert row_lines(out / "traces" / "bs1-run0.jsonl") == row_lines(out / "traces" / "bs1-run1.jsonl")
    assert "each repeat in a process of its own" in (out / "report.txt").read_text()


def test_strict_refusal_exits_2_in_one_line(torch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.delattr(torch, "use_deterministic_algorithms")
    out = tmp_path / "check"
    assert main(["check", "--model", "tiny-llama", *FAST, "--mode", "strict", "--out", str(out), "-q"]) == 2
    assert capsys.readouterr().err == (
        f"detllm: strict mode: cannot apply torch_use_deterministic_algorithms: torch {torch.__version__} has no "
        "use_deterministic_algorithms; use --mode best-effort to run without it\n"
    )
    assert not out.exists()


def test_best_effort_lowers_the_claim(torch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.delattr(torch, "use_deterministic_algorithms")
    out = tmp_path / "check"
    assert main(["check", "--model", "tiny-llama", *FAST, "--batch-size", "2", "--compositions", "none", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "detllm: warning: determinism control torch_use_deterministic_algorithms not applied" in captured.err
    report = load_report(out / "report.json")
    assert report.verdict.tier2 is True
    assert (report.verdict.claim, report.verdict.downgraded) == ("tier1", True)
    assert report.determinism.missing == {
        "torch_use_deterministic_algorithms": f"torch {torch.__version__} has no use_deterministic_algorithms"
    }
    assert "The claim is lowered from Tier 2 (repeatable tokens and logprobs) to Tier 1" in report.verdict.text
    assert "claim: Tier 1 (lowered: determinism incomplete)" in captured.out


def test_report_command_renders_a_check_directory(flip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = load_report(flip / "report.json").exit_code()
    assert main(["report", str(flip)]) == expected
    assert capsys.readouterr().out == (flip / "report.txt").read_text()


def test_pack_end_to_end(flip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = load_report(flip / "report.json")
    diverging = [p.prompt_id for p in report.prompts if any(d.result.divergence is not None for d in p.divergences)]
    pack = tmp_path / "pack"
    code = main(["pack", str(flip), "--out", str(pack), "-q"])
    if not diverging:  # this CPU's kernels flipped nothing: there is nothing to pack
        assert code == 2 and not pack.exists()
        return
    assert code == 0
    traces = [pack / run.trace.path for run in report.runs]
    assert main(["validate", "-q", *map(str, traces)]) == 0
    for path in traces:
        assert list(rows(path)) == diverging
    for index, comparison in enumerate(report.comparisons):
        again = diff_traces(traces[comparison.left], traces[comparison.right])
        before = {p.prompt_id: d.result for p in report.prompts for d in p.divergences
                  if d.comparison == index and p.prompt_id in diverging}  # fmt: skip
        after = {r.prompt_id: r for r in again.diverging()}
        assert sorted(after) == sorted(before)
        for pid, result in before.items():
            assert (after[pid].classification, after[pid].divergence) == (result.classification, result.divergence)
    readme = (pack / "README.md").read_text()
    assert "--prompt-file prompts.jsonl" in readme and "detllm diff traces/bs1-run0.jsonl again/traces/bs1-run0.jsonl" in readme
    assert main(["report", str(pack), "-q"]) == 1


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        (["--batch-size", "1,1"], "detllm: batch sizes must be distinct, got 1,1\n"),
        (["--batch-size", "1,x"], "detllm: batch sizes must be integers separated by commas, got '1,x'\n"),
        (["--batch-size", "1", "--runs", "1"], "detllm: nothing to compare: one run at batch size 1; ask for --runs 2 or more, or another batch size\n"),
        (["--compositions", "in-order"], "detllm: in-order is always run; --compositions lists the others\n"),
        (["--compositions", "sideways"], "detllm: unknown batch composition 'sideways' (choose from in-order, reversed, shuffled:SEED)\n"),
        (["--runs", "0"], "detllm: runs must be at least 1, got 0\n"),
    ]
    for extra, message in cases:
        assert main(["check", "--model", "tiny-llama", *FAST, *extra, "--out", str(tmp_path / "x")]) == 2, extra
        assert capsys.readouterr().err == message
    assert not (tmp_path / "x").exists()
    with pytest.raises(UsageError, match="batch_size is not a setting of a check"):
        detllm.check("tiny-llama", batch_size=4)


def test_default_compositions_give_prompts_other_neighbours() -> None:
    assert default_compositions(8, [1]) == []
    reversed_, shuffled = default_compositions(8, [1, 4])
    assert reversed_ == "reversed" and shuffled.startswith("shuffled:")
    from detllm.capture.check import _mates_changed

    assert _mates_changed(8, 4, shuffled) == 8
    assert _mates_changed(8, 4, "reversed") == 0
    assert parse_batch_sizes("1, 8") == [1, 8]


def test_progress_on_a_terminal_and_in_a_log() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    bar = Progress("detllm check", tty)
    bar(0, 4, "loading", "loading tiny-llama")
    bar(2, 4, "bs1-run0", "batch 2 of 2")
    bar.close()
    drawn = tty.getvalue().split("\r")
    assert drawn[1].startswith("detllm check [........................] 0/4 loading: loading tiny-llama")
    assert drawn[2].startswith("detllm check [############............] 2/4 bs1-run0: batch 2 of 2")
    assert all(len(part) == 79 for part in drawn[1:-1]) and drawn[-1] == ""

    log = io.StringIO()
    plain = Progress("detllm check", log)
    plain(0, 4, "bs1-run0", "starting")
    plain(1, 4, "bs1-run0", "batch 1 of 2")  # same run: no new line
    plain(2, 4, "bs1-run1", "starting")
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "detllm check: [0/4] bs1-run0: starting",
        "detllm check: [2/4] bs1-run1: starting",
    ]
    quiet = io.StringIO()
    Progress("detllm check", quiet, enabled=False)(1, 2, "x", "y")
    assert quiet.getvalue() == ""

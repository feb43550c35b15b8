"""The diff and report commands: exit codes, outputs and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detllm.cli import main
from detllm.trace import Logprobs
from detllm.writer import TraceWriter
from tests.diff._traces import drift, flip_at, header, rows, write

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "diff"


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    data = rows(3)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [data[0], flip_at(data[1], 2), drift(data[2], -1e-6)])
    return a, b


def test_exit_codes_follow_the_tier(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = rows(2)
    a = write(tmp_path / "a.jsonl", data)
    b = write(tmp_path / "b.jsonl", [drift(r, -1e-6) for r in data])
    assert run(capsys, "diff", a, a)[0] == 0
    assert run(capsys, "diff", a, b)[0] == 0
    assert run(capsys, "diff", a, b, "--tier", "2")[0] == 1
    assert run(capsys, "diff", a, b, "--tier", "2", "--atol", "1e-5")[0] == 0


def test_text_report(capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]) -> None:
    code, out, err = run(capsys, "diff", *pair)
    assert code == 1 and err == ""
    assert out.splitlines()[0] == "detllm diff: decisive_flip"
    assert 'Prompt "p1": decisive_flip at token 2' in out
    assert "Tokens equal, logprobs differ (1 prompt)" in out


def test_json_and_markdown(capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]) -> None:
    code, out, _ = run(capsys, "diff", *pair, "--json")
    data = json.loads(out)
    assert code == 1 and data["kind"] == "diff"
    assert [p["status"] for p in data["prompts"]] == ["identical", "tokens_diverge", "logprobs_differ"]
    code, out, _ = run(capsys, "diff", *pair, "--markdown")
    assert out.startswith("### detLLM diff: `decisive_flip`")
    assert "| rank | left token | left logprob | right token | right logprob |" in out
    code, out, _ = run(capsys, "diff", *pair, "--html")
    assert code == 1
    assert out.startswith("<!DOCTYPE html>")
    assert '<section id="verdict" class="banner fail" data-classification="decisive_flip" data-exit="1">' in out
    with pytest.raises(SystemExit) as exited:
        run(capsys, "diff", *pair, "--html", "--markdown")
    assert exited.value.code == 2
    assert "argument --markdown: not allowed with argument --html" in capsys.readouterr().err


def test_out_directory(capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "diff", *pair, "--out", out_dir, "-q")
    assert code == 1 and out == ""
    assert sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()) == [
        "diffs/first_divergence.json",
        "report.html",
        "report.json",
        "report.md",
        "report.txt",
    ]
    first = json.loads((out_dir / "diffs" / "first_divergence.json").read_text())
    assert first["kind"] == "first_divergence"
    assert [d["prompt_id"] for d in first["divergences"]] == ["p1", "p2"]
    assert first["divergences"][0]["divergence"]["index"] == 2
    # report re-renders the saved report, with the same exit status
    code, rendered, _ = run(capsys, "report", out_dir)
    assert code == 1
    assert rendered == (out_dir / "report.txt").read_text()
    code, _, _ = run(capsys, "report", out_dir / "report.json", "--tier", "2")
    assert code == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["diff", "{tmp}/missing.jsonl", "{a}"], "detllm: {tmp}/missing.jsonl: no such file or directory\n"),
        (["diff", "{tmp}", "{a}"], "detllm: {tmp}: holds several traces (a.jsonl, b.jsonl); name the one to use\n"),
        (["report", "{a}"], "detllm: {a}: one trace has nothing to compare with; give two or more\n"),
        (["report", "{a}", "{a}", "--atol", "-1"], "detllm: atol must be a number >= 0, got -1.0\n"),
    ],
)
def test_usage_and_input_errors(capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path], tmp_path: Path, argv: list[str], message: str) -> None:
    a = pair[0]
    code, out, err = run(capsys, *(x.format(tmp=tmp_path, a=a) for x in argv))
    assert (code, out, err) == (2, "", message.format(tmp=tmp_path, a=a))


def test_an_invalid_trace_is_trouble_not_a_verdict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", rows(2))
    bad = tmp_path / "bad.jsonl"
    lines = a.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1][:-5] + "oops}", *lines[2:]]) + "\n")
    code, out, err = run(capsys, "diff", a, bad)
    assert (code, out) == (2, "")
    assert err.startswith(f"detllm: {bad}:2: ") and err.count("\n") == 1 and "Traceback" not in err
    # validate judges the same file invalid (exit 1): for validate that is the answer
    assert run(capsys, "validate", bad)[0] == 1


def test_incomplete_trace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = rows(2)
    a = write(tmp_path / "a.jsonl", data)
    writer = TraceWriter(tmp_path / "b.jsonl", header())
    writer.write(data[0])
    partial = writer.abandon()
    code, _, err = run(capsys, "diff", a, partial)
    assert code == 2
    assert err == f"detllm: {partial}:3: footer: missing: the trace ends after 1 rows without its footer (the run that wrote it did not finish, or the file was cut)\n"
    code, out, _ = run(capsys, "diff", a, partial, "--allow-incomplete")
    assert code == 1 and "INCOMPLETE" in out and "The right trace is incomplete" in out


def test_tier_2_without_logprobs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", rows(1, logprobs=False), header(logprobs=Logprobs(semantics="none", top_k=0)))
    code, _, err = run(capsys, "diff", a, a, "--tier", "2")
    assert code == 2
    assert err == (
        f"detllm: {a}: records no logprobs (logprobs.semantics is 'none'), so Tier 2 cannot be judged; use --tier 1\n"
    )


def test_report_aggregates_a_directory(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run(capsys, "report", "fixtures/diff/aggregate_batch_sweep/runs")
    assert code == 1
    assert out == (FIXTURES / "aggregate_batch_sweep" / "report.txt").read_text()


def test_report_of_two_traces_is_a_diff(capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path]) -> None:
    code, out, _ = run(capsys, "report", *pair)
    assert code == 1 and out.startswith("detllm diff: decisive_flip")


def test_report_rejects_options_for_a_saved_report(capsys: pytest.CaptureFixture[str], pair: tuple[Path, Path], tmp_path: Path) -> None:
    run(capsys, "diff", *pair, "--out", tmp_path / "out", "-q")
    code, _, err = run(capsys, "report", tmp_path / "out", "--atol", "0.1")
    assert code == 2 and "a saved report is rendered as it was made" in err


def test_a_broken_saved_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{"format": "detllm.report", "version": "1.0",\n "kind": ')
    code, _, err = run(capsys, "report", path)
    assert (code, err) == (2, f"detllm: {path}:2: -: not valid JSON (unexpected end of data)\n")
    path.write_text('{"format": "detllm.trace"}')
    code, _, err = run(capsys, "report", path)
    assert (code, err) == (2, f"detllm: {path}:1: format: expected 'detllm.report', got 'detllm.trace'\n")


def test_a_saved_report_at_a_tier_it_cannot_judge(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", rows(1, logprobs=False), header(logprobs=Logprobs(semantics="none", top_k=0)))
    assert run(capsys, "diff", a, a, "--out", tmp_path / "out", "-q")[0] == 0
    code, _, err = run(capsys, "report", tmp_path / "out", "--tier", "2", "-q")
    assert (code, err) == (2, "detllm: Tier 2 cannot be judged: a trace records no logprobs\n")

"""The check report and the repro pack, on a check directory recorded from tiny-flip.

These read files only: no torch, no model. ``fixtures/recorded/check-flip`` is a
whole ``detllm check`` directory; its report files are the goldens (rewrite them with
``DETLLM_UPDATE_GOLDENS=1``).
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest

from detllm import __version__, open_trace, validate_trace
from detllm.cli import main
from detllm.diff import DiffOptions, diff_traces, rebuild_check_report
from detllm.diff.model import CheckReport
from detllm.report import load_report, render_html, render_json, render_markdown, render_text
from detllm.report import recorded_command
from detllm.diff.inputs import read_plan
from detllm.rundir import plan_runs
from detllm._text_util import width

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "fixtures" / "recorded" / "check-flip"
SCHEMA = ROOT / "formats" / "report-v1.schema.json"
UPDATE = os.environ.get("DETLLM_UPDATE_GOLDENS") == "1"


def _normalise(text: str) -> str:
    return text.replace(f'"version": "{__version__}"', '"version": "VERSION"').replace(
        f"<footer>detllm {__version__} ", "<footer>detllm VERSION "
    )


def rows(path: Path) -> dict:
    with open_trace(path) as reader:
        return {row.prompt_id: row for row in reader}


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


@pytest.fixture(scope="module")
def report() -> CheckReport:
    return rebuild_check_report(CHECK)


def _html(report: CheckReport) -> str:
    # As ``detllm check`` writes it: the reproduce box holds the command run_config.json records.
    return render_html(report, command=recorded_command(CHECK))


@pytest.mark.parametrize("kind", ["txt", "md", "json", "html"])
def test_rendering_matches_the_check_s_own_files(report: CheckReport, kind: str) -> None:
    rendered = {"txt": render_text, "md": render_markdown, "json": render_json, "html": _html}[kind](report)
    golden = CHECK / f"report.{kind}"
    if kind in ("json", "html"):
        if UPDATE:
            golden.write_text(rendered, encoding="utf-8")
        assert _normalise(rendered) == _normalise(golden.read_text(encoding="utf-8"))
        return
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    assert rendered == golden.read_text(encoding="utf-8")


def test_saved_report_loads_back_equal(report: CheckReport) -> None:
    saved = load_report(CHECK / "report.json")
    assert isinstance(saved, CheckReport)
    assert render_text(saved) == render_text(report)
    assert saved.to_dict()["prompts"] == report.to_dict()["prompts"]


def test_text_fits_80_columns(report: CheckReport) -> None:
    assert [line for line in render_text(report).splitlines() if width(line) > 80] == []


def test_reports_follow_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for name in ("report.json", "diffs/first_divergence.json"):
        data = json.loads((CHECK / name).read_text())
        validator.validate(data)
    data = json.loads((CHECK / "report.json").read_text())
    data["verdict"]["claim"] = "tier3"
    assert not validator.is_valid(data)


def test_the_three_answers(report: CheckReport) -> None:
    v = report.verdict
    assert (v.tier1, v.tier2, v.batch_invariant) == (True, True, False)
    assert (v.claim, v.downgraded, v.classification) == ("tier2", False, "near_tie_flip")
    assert report.exit_code() == 1 and report.exit_code(2) == 1
    assert [c.question for c in report.comparisons] == ["repeat", "batch", "batch", "batch"]
    assert [r.name for r in report.runs] == ["bs1-run0", "bs1-run1", "bs4-in-order", "bs4-reversed", "bs4-shuffled-1"]
    _, plan = read_plan(CHECK)
    assert plan.traces == plan_runs(2, [1, 4], ["reversed", "shuffled:1"])


def test_plan_names_every_trace() -> None:
    planned = plan_runs(2, [4, 1], ["reversed", "shuffled:7"], isolate=True)
    assert [(r.name, r.role, r.batch_size, r.composition, r.repeat, r.isolated) for r in planned] == [
        ("bs4-run0", "repeat", 4, "in-order", 0, True),
        ("bs4-run1", "repeat", 4, "in-order", 1, True),
        ("bs4-reversed", "sweep", 4, "reversed", None, False),
        ("bs4-shuffled-7", "sweep", 4, "shuffled:7", None, False),
        ("bs1-in-order", "sweep", 1, "in-order", None, False),
    ]
    assert all(r.path == f"traces/{r.name}.jsonl" for r in planned)


def test_json_report_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(CHECK), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["kind"], data["verdict"]["batch_invariant"]) == ("check", False)
    saved = json.loads((CHECK / "report.json").read_text())
    data["producer"]["version"] = saved["producer"]["version"] = "VERSION"
    assert data == saved


def test_divergences_are_where_the_traces_part(report: CheckReport) -> None:
    """Every divergence the report gives is the first token where the two traces' rows
    differ, read straight from the files; every such difference is in the report."""
    traces = [rows(CHECK / run.trace.path) for run in report.runs]
    found = {(p.prompt_id, d.comparison): d.result for p in report.prompts for d in p.divergences}
    parted = 0
    for index, comparison in enumerate(report.comparisons):
        left, right = traces[comparison.left], traces[comparison.right]
        for pid, row in left.items():
            step = first_difference(row.token_ids, right[pid].token_ids)
            result = found.get((pid, index))
            if step is None:
                assert result is None or result.status == "logprobs_differ"
                continue
            parted += 1
            assert result is not None and result.divergence is not None
            assert result.divergence.index == step
            assert result.classification == "near_tie_flip"
            assert {result.divergence.left.token.id, result.divergence.right.token.id} == {
                row.token_ids[step], right[pid].token_ids[step]
            }
    assert parted == sum(c.statuses["tokens_diverge"] + c.statuses["stopped_early"] for c in report.comparisons)
    assert parted > 0


def test_completions_per_prompt_count_distinct_token_sequences(report: CheckReport) -> None:
    traces = [rows(CHECK / run.trace.path) for run in report.runs]
    for prompt in report.prompts:
        distinct = {tuple(t[prompt.prompt_id].token_ids) for t in traces}
        assert prompt.completions == len(distinct)


def test_neighbours_are_counted_from_the_placements(report: CheckReport) -> None:
    moved = {r.name: r.neighbours_changed for r in report.runs}
    assert moved["bs1-run0"] is None and moved["bs4-in-order"] is None
    assert moved["bs4-shuffled-1"] == 8  # the shuffle chosen gives every prompt other batch-mates
    assert moved["bs4-reversed"] == 0  # reversing 8 prompts in batches of 4 keeps each batch's members


def test_report_command_renders_the_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(CHECK)]) == 1
    assert capsys.readouterr().out == (CHECK / "report.txt").read_text(encoding="utf-8")
    assert main(["report", str(CHECK), "--markdown"]) == 1
    assert capsys.readouterr().out == (CHECK / "report.md").read_text(encoding="utf-8")
    assert main(["report", str(CHECK), "--html"]) == 1
    assert _normalise(capsys.readouterr().out) == _normalise((CHECK / "report.html").read_text(encoding="utf-8"))


def test_report_command_judges_a_check_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Comparison options, or a missing report.json: the report is built again from the traces.
    assert main(["report", str(CHECK), "--atol", "1", "--tier", "2", "-q"]) == 1
    copy = tmp_path / "check"
    shutil.copytree(CHECK, copy)
    (copy / "report.json").unlink()
    assert main(["report", str(copy)]) == 1
    assert capsys.readouterr().out == (CHECK / "report.txt").read_text(encoding="utf-8")


def test_pack_keeps_the_diverging_prompts_and_reproduces_them(tmp_path: Path, capsys: pytest.CaptureFixture[str], report: CheckReport) -> None:
    pack = tmp_path / "pack"
    assert main(["pack", str(CHECK), "--out", str(pack)]) == 0
    diverging = [p.prompt_id for p in report.prompts if any(d.result.divergence is not None for d in p.divergences)]
    assert 0 < len(diverging) < len(report.prompts)
    out = capsys.readouterr().out
    assert out.startswith(f"{pack}: {len(diverging)} of {len(report.prompts)} prompts;")

    names = sorted(p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file())
    assert names == sorted(
        ["README.md", "prompts.jsonl", "env.json", "run_config.json", "determinism_applied.json", "report.json",
         "report.txt", "report.md", "report.html", "diffs/first_divergence.json", *(r.trace.path for r in report.runs)]
    )
    # The page's reproduce box holds the README's command, escaped as HTML.
    readme = (pack / "README.md").read_text()
    again = next(line for line in readme.splitlines() if line.startswith("detllm check "))
    assert f'<pre id="command">{html.escape(again, quote=True)}' in (pack / "report.html").read_text()
    assert main(["validate", *(str(pack / r.trace.path) for r in report.runs)]) == 0
    for run in report.runs:
        assert validate_trace(pack / run.trace.path).valid
        assert list(rows(pack / run.trace.path)) == diverging
    prompts = [json.loads(line) for line in (pack / "prompts.jsonl").read_text().splitlines()]
    original = json.loads((CHECK / "run_config.json").read_text())["prompts"]
    assert prompts == [p for p in original if p["id"] in diverging]

    # Diffing the packed traces finds the same first divergences as the original check.
    for index, comparison in enumerate(report.comparisons):
        left, right = (pack / report.runs[i].trace.path for i in (comparison.left, comparison.right))
        again = {r.prompt_id: r for r in diff_traces(left, right, DiffOptions()).diverging()}
        before = {
            p.prompt_id: d.result for p in report.prompts for d in p.divergences if d.comparison == index and p.prompt_id in diverging
        }
        assert sorted(again) == sorted(before)
        for pid, result in before.items():
            assert (again[pid].classification, again[pid].divergence, again[pid].drift, again[pid].evidence) == (
                result.classification, result.divergence, result.drift, result.evidence,
            )
    packed = load_report(pack / "report.json")
    assert isinstance(packed, CheckReport)
    assert packed.verdict.batch_invariant is False and packed.summary.prompts == len(diverging)

    readme = (pack / "README.md").read_text()
    command = (
        "detllm check --model tiny-flip --backend hf --dtype float32 --device cpu --max-new-tokens 4 --mode strict "
        "--redact hostname,paths,variables --runs 2 --batch-size 1,4 --compositions reversed,shuffled:1 --tier 1 "
        "--prompt-file prompts.jsonl --out again"
    )
    assert command in readme
    assert "detllm diff traces/bs1-run0.jsonl again/traces/bs1-run0.jsonl" in readme
    assert "detllm diff traces/bs1-run0.jsonl traces/bs4-in-order.jsonl" in readme


def test_pack_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pack = tmp_path / "pack"
    (pack / "x").mkdir(parents=True)
    assert main(["pack", str(CHECK), "--out", str(pack)]) == 2
    assert capsys.readouterr().err == f"detllm: {pack}: directory is not empty; choose another --out or remove it\n"

    # A check whose runs all agree: nothing to pack, unless --all.
    agreeing = tmp_path / "agreeing"
    shutil.copytree(CHECK, agreeing)
    document = json.loads((agreeing / "run_config.json").read_text())
    document["check"]["batch_sizes"] = [1]
    document["check"]["compositions"] = []
    document["check"]["traces"] = document["check"]["traces"][:2]
    (agreeing / "run_config.json").write_text(json.dumps(document))
    (agreeing / "report.json").unlink()
    assert main(["pack", str(agreeing), "--out", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == (
        f"detllm: {agreeing}: no prompt diverges from run 0 in its tokens (Tier 1); nothing to pack "
        "(--all packs every prompt)\n"
    )
    assert not (tmp_path / "none").exists()
    assert main(["pack", str(agreeing), "--out", str(tmp_path / "all"), "-q", "--all"]) == 0
    assert len(rows(tmp_path / "all" / "traces" / "bs1-run0.jsonl")) == 8

    assert main(["pack", str(tmp_path / "missing"), "--out", str(tmp_path / "p2")]) == 2
    assert capsys.readouterr().err == f"detllm: {tmp_path / 'missing'}: not a directory (give a check or run directory)\n"

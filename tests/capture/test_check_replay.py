"""``detllm check --replay`` on the fixture model ``tiny-flip`` (CPU, seconds).

tiny-flip's lm_head has near-duplicate rows, so whatever flips between batch sizes 1
and 8 on this CPU flips on a near tie: the replay must measure a small margin there,
from forced logprobs that agree with the decoded ones within the measured noise floor.
Which prompts flip depends on the CPU's kernels, so the tests compare the report with
the traces rather than with fixed prompts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from detllm import open_trace
from detllm.cli import main
from detllm.diff import rebuild_check_report
from detllm.diff.model import CheckReport
from detllm.report import load_report

pytestmark = pytest.mark.hf

FAST = ["--device", "cpu", "--max-new-tokens", "8", "--mode", "strict"]


@pytest.fixture(autouse=True, scope="module")
def _needs_torch():
    # Module scope: it runs before the module-scoped fixtures that load a model.
    pytest.importorskip("torch")


def rows(path: Path) -> dict:
    with open_trace(path) as reader:
        return {row.prompt_id: row for row in reader}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "check"
    code = main(["check", "--model", "tiny-flip", *FAST, "--batch-size", "1,8", "--compositions", "none",
                 "--replay", "--out", str(out), "-q"])  # fmt: skip
    assert code == load_report(out / "report.json").exit_code()
    return out


def test_every_flip_has_a_measured_margin_and_it_is_a_near_tie(replayed: Path) -> None:
    report = load_report(replayed / "report.json")
    assert isinstance(report, CheckReport) and report.replayed is not None
    traces = {run.name: rows(replayed / run.trace.path) for run in report.runs}
    flips = {
        (d.comparison, p.prompt_id): d.result.divergence.index
        for p in report.prompts
        for d in p.divergences
        if d.result.divergence is not None and d.result.divergence.right.token is not None
    }
    if not flips:
        pytest.skip("batch size 8 flipped no token on this CPU")
    measured = {(m.comparison, m.prompt_id): m for m in report.replay.margins}
    assert measured.keys() == flips.keys() and not report.replay.unmeasured
    floors = {f.setup: f for f in report.replay.floors}
    assert set(floors) == {"bs1-run0", "bs8-in-order"}
    for key, index in flips.items():
        m = measured[key]
        left, right = report.runs[report.comparisons[m.comparison].left], report.runs[report.comparisons[m.comparison].right]
        a, b = traces[left.name][m.prompt_id], traces[right.name][m.prompt_id]
        assert m.index == index and (m.left_token, m.right_token) == (a.token_ids[index], b.token_ids[index])
        assert (m.left_setup.setup, m.left_setup.batch_size, m.right_setup.setup, m.right_setup.batch_size) == (
            "bs1-run0", 1, "bs8-in-order", 8)
        # The forced logprob of each run's token under its own setup is the decoded one, within that setup's floor.
        assert abs(m.left_setup.left_logprob - a.logprobs[index]) <= floors[left.name].max_abs
        assert abs(m.right_setup.right_logprob - b.logprobs[index]) <= floors[right.name].max_abs
        assert m.left_setup.margin == m.left_setup.left_logprob - m.left_setup.right_logprob
        # Small, and consistent with the lead run 0's own top-k recorded.
        assert m.noise == max(floors[left.name].max_abs, floors[right.name].max_abs) > 0
        assert abs(m.left_setup.margin) < 1e-4 and abs(m.right_setup.margin) < 1e-4
        assert m.inferred_left_lead is not None and abs(m.left_setup.margin - m.inferred_left_lead) <= m.tolerance
        assert m.inferred == "near_tie_flip" and m.verdict == "near_tie"
        assert max(abs(m.left_setup.margin), abs(m.right_setup.margin)) <= m.tolerance


def test_replays_are_kept_and_judged_again_offline(replayed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = load_report(replayed / "report.json")
    assert isinstance(report, CheckReport) and report.replayed is not None
    index = json.loads((replayed / "replays" / "replays.json").read_text())
    assert index["format"] == "detllm.check_replays" and len(index["replays"]) == len(report.replay.replays)
    prompts = {p.prompt_id: i for i, p in enumerate(report.prompts)}
    for spec in report.replay.replays:
        source = replayed / "traces" / f"{spec.source}.jsonl"
        with open_trace(replayed / spec.path) as reader:
            header, got = reader.header, list(reader)
        with open_trace(source) as reader:
            list(reader)
            digest = reader.footer.digest
        assert header.replay is not None and header.replay.source_digest == digest
        assert (header.batch.size, header.batch.composition) == (spec.batch_size, spec.composition)
        ids = [r.prompt_id for r in got]
        assert ids == sorted(ids, key=prompts.__getitem__) and set(spec.prompts) <= set(ids)
        if spec.batch_size == 1:  # only the diverging prompts
            assert ids == sorted(spec.prompts, key=prompts.__getitem__)
        assert all(r.batch.size == min(spec.batch_size, len(prompts)) for r in got) and spec.rows == len(got)
    assert rebuild_check_report(replayed).replay == report.replay
    assert main(["report", str(replayed)]) == report.exit_code()
    out = capsys.readouterr().out
    assert "Replay-backed verdicts" in out and "near tie (measured)" in out
    assert main(["report", str(replayed), "--markdown"]) == report.exit_code()
    assert "| replay-backed verdict |" in capsys.readouterr().out
    assert '<h2 id="replay">Replay-backed verdicts</h2>' in (replayed / "report.html").read_text()


def test_without_replay_the_report_has_no_replay_member(tmp_path: Path) -> None:
    out = tmp_path / "check"
    main(["check", "--model", "tiny-flip", *FAST, "--batch-size", "1,8", "--compositions", "none", "--out", str(out), "-q"])
    assert "replay" not in json.loads((out / "report.json").read_text())
    assert not (out / "replays").exists()
    assert "Replay-backed" not in (out / "report.txt").read_text() + (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--isolate"], "--replay replays on the check's loaded model, which --isolate does not keep; drop one of them"),
        (["--backend", "openai", "--base-url", "http://127.0.0.1:9", "--chat"],
         "--replay scores forced tokens through /v1/completions, which --chat leaves; drop one of them"),
    ],
)
def test_bad_combinations_are_refused_in_one_line(extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--model", "tiny-flip", *FAST, "--replay", *extra, "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"detllm: {message}\n"
    assert not (tmp_path / "x").exists()


def test_nothing_diverges_nothing_is_replayed(tmp_path: Path) -> None:
    out = tmp_path / "check"
    assert main(["check", "--model", "tiny-llama", *FAST, "--batch-size", "4", "--compositions", "none",
                 "--replay", "--out", str(out), "-q"]) == 0  # fmt: skip
    report = load_report(out / "report.json")
    assert isinstance(report, CheckReport) and report.replayed is not None
    assert (report.replay.replays, report.replay.margins, report.replay.floors) == ([], [], [])
    assert report.replay.text == "No prompt's tokens diverge from run 0: nothing to replay."
    assert sorted(p.name for p in (out / "replays").iterdir()) == ["replays.json"]


def test_a_replayed_batch_the_engine_split_is_reported(replayed: Path, tmp_path: Path) -> None:
    report = load_report(replayed / "report.json")
    assert isinstance(report, CheckReport) and report.replayed is not None
    assert all(spec.scheduled is None for spec in report.replay.replays)  # hf: one forward pass per batch
    assert "did not score every replayed batch" not in report.replay.text
    if not report.replay.replays:
        pytest.skip("batch size 8 flipped no token on this CPU")
    copy = tmp_path / "check"
    shutil.copytree(replayed, copy)
    index = json.loads((copy / "replays" / "replays.json").read_text())
    first = index["replays"][0]
    for spec in index["replays"]:
        spec["scheduled"] = [1]
    first["scheduled"] = [2, 1]
    (copy / "replays" / "replays.json").write_text(json.dumps(index))
    again = rebuild_check_report(copy)
    assert again.replay is not None and again.replay.margins == report.replay.margins
    assert again.replay.text.endswith(
        f"The engine did not score every replayed batch as one batch ({first['name']} (1 of 2) split over several "
        "steps, or with no scheduling times): those replays stand for smaller batches than their setup's."
    )


@pytest.mark.parametrize("every", [False, True])
def test_pack_keeps_the_replays_of_its_prompts_and_judges_them_again(
    replayed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], every: bool
) -> None:
    report = load_report(replayed / "report.json")
    assert isinstance(report, CheckReport) and report.replayed is not None
    if not report.replay.margins:
        pytest.skip("batch size 8 flipped no token on this CPU")
    pack = tmp_path / "pack"
    assert main(["pack", str(replayed), "--out", str(pack), "-q", *(["--all"] if every else [])]) == 0
    kept = json.loads((pack / "run_config.json").read_text())["pack"]["kept"]
    packed = load_report(pack / "report.json")
    assert isinstance(packed, CheckReport) and packed.replay is not None
    index = json.loads((pack / "replays" / "replays.json").read_text())
    assert [r["name"] for r in index["replays"]] == [r.name for r in report.replay.replays]
    for spec, original in zip(packed.replay.replays, report.replay.replays):
        with open_trace(pack / spec.path) as reader:
            header, got = reader.header, list(reader)
        with open_trace(pack / "traces" / f"{spec.source}.jsonl") as reader:
            list(reader)
            source = reader.footer
        # A packed replay names its packed source, and holds the kept prompts' rows of the original replay.
        assert header.replay is not None and (header.replay.source_digest, header.replay.source_rows) == (source.digest, source.rows)
        assert spec.prompts == [p for p in original.prompts if p in kept] and spec.rows == len(got)
        assert [r.prompt_id for r in got] == [r.prompt_id for r in rows(replayed / original.path).values() if r.prompt_id in kept]
        assert all(r == rows(replayed / original.path)[r.prompt_id] for r in got)
    if every:  # nothing cut: the same measurements
        assert packed.replay == report.replay and not packed.replay.unmeasured
    measured = {(m.comparison, m.prompt_id): (m.left_setup, m.right_setup) for m in packed.replay.margins}
    assert measured == {(m.comparison, m.prompt_id): (m.left_setup, m.right_setup) for m in report.replay.margins}
    assert rebuild_check_report(pack).replay == packed.replay
    assert main(["report", str(pack), "-q"]) == packed.exit_code()
    readme = (pack / "README.md").read_text()
    assert " --replay " in readme and "`replays/`" in readme
    capsys.readouterr()


def _replays_changed(replayed: Path, tmp_path: Path, change: str) -> tuple[Path, str]:
    import shutil

    import msgspec

    from detllm import TraceWriter

    check = tmp_path / "check"
    shutil.copytree(replayed, check)
    index_path = check / "replays" / "replays.json"
    index = json.loads(index_path.read_text())
    if not index["replays"]:
        pytest.skip("batch size 8 flipped no token on this CPU")
    spec = index["replays"][0]
    if change == "digest":
        path = check / spec["path"]
        with open_trace(path) as reader:
            header, got = reader.header, list(reader)
        assert header.replay is not None
        header = msgspec.structs.replace(header, replay=msgspec.structs.replace(header.replay, source_digest="sha256:" + "0" * 64))
        path.unlink()
        with TraceWriter(path, header) as writer:
            for row in got:
                writer.write(row)
        return check, (f"{path}:1: replay.source_digest: sha256:{'0' * 64} is not the digest of the run it replays "
                       f"({spec['source']})")
    spec["path"] = "../outside.jsonl"
    index_path.write_text(json.dumps(index))
    return check, f"{index_path}:1: replays.path: '../outside.jsonl' is not a file in replays/"


@pytest.mark.parametrize("change", ["digest", "path"])
def test_pack_refuses_a_replay_that_names_another_source_or_lies_outside_replays(
    replayed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    check, message = _replays_changed(replayed, tmp_path, change)
    assert main(["pack", str(check), "--out", str(tmp_path / "pack"), "--all"]) == 2
    assert capsys.readouterr().err == f"detllm: {message}\n"
    assert not (tmp_path / "pack").exists() and not (tmp_path / "outside.jsonl").exists()


@pytest.mark.parametrize(
    ("version", "message"),
    [("2.0", "version: major version 2 is not supported (this detLLM reads 1.x run directories)"), ("1.9", None)],
)
def test_the_replay_index_is_version_checked(
    replayed: Path, version: str, message: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "check"
    shutil.copytree(replayed, copy)
    (copy / "report.json").unlink()  # judged again from its files, the replay index included
    index = copy / "replays" / "replays.json"
    index.write_text(index.read_text().replace('"version": "1.0"', f'"version": "{version}"', 1))
    code = main(["report", str(copy), "--json"])
    captured = capsys.readouterr()
    if message is None:  # a newer minor version is read
        assert code == load_report(replayed / "report.json").exit_code()
        assert json.loads(captured.out)["replay"] == json.loads((replayed / "report.json").read_text())["replay"]
    else:
        assert code == 2 and captured.err == f"detllm: {index}:1: {message}\n"

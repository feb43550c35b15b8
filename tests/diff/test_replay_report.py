"""``detllm diff ORIGINAL REPLAY``: the estimators by hand, the recorded goldens, escaping, refusals."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import msgspec
import pytest

from detllm import __version__, write_trace
from detllm._escape import text as escape
from detllm.cli import main
from detllm.diff._replay import compare_replay_row, setup_differences, topk_divergence
from detllm.diff import build_replay_report
from detllm.trace import REPLAY_VERSION, Replay

from tests.factories import make_header, make_row

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "fixtures" / "recorded" / "replay-bf16"
UPDATE = os.environ.get("DETLLM_UPDATE_GOLDENS") == "1"
ln = math.log


# -- the estimators, computed by hand ------------------------------------------------------


def test_kl_when_only_the_recorded_token_is_known_to_both() -> None:
    # p: token 1 at 0.5, token 2 at 0.3; q: token 1 at 0.4, token 3 at 0.35. Known: {1}.
    d = topk_divergence(1, ln(0.5), ln(0.4), [(1, ln(0.5)), (2, ln(0.3))], [(1, ln(0.4)), (3, ln(0.35))])
    # 0.5 ln(0.5/0.4) + rest 0.5 ln(0.5/0.6)
    assert d.kl == pytest.approx(0.5 * ln(0.5 / 0.4) + 0.5 * ln(0.5 / 0.6), abs=1e-12)
    assert d.kl == pytest.approx(0.0204110, abs=1e-7)
    assert d.missing_mass == pytest.approx(0.5)
    assert (d.tv_low, d.tv_high) == (pytest.approx(0.1), pytest.approx(0.6))


def test_kl_over_tokens_both_top_k_lists_hold() -> None:
    d = topk_divergence(1, ln(0.5), ln(0.4), [(1, ln(0.5)), (2, ln(0.3))], [(2, ln(0.45)), (1, ln(0.4))])
    assert d.kl == pytest.approx(0.5 * ln(0.5 / 0.4) + 0.3 * ln(0.3 / 0.45) + 0.2 * ln(0.2 / 0.15), abs=1e-12)
    assert d.kl == pytest.approx(0.0474687, abs=1e-7)
    assert d.missing_mass == pytest.approx(0.2)
    assert (d.tv_low, d.tv_high) == (pytest.approx(0.15), pytest.approx(0.3))


def test_kl_estimate_is_a_lower_bound_of_the_true_kl() -> None:
    p = [0.5, 0.3, 0.1, 0.06, 0.04]
    q = [0.4, 0.45, 0.05, 0.05, 0.05]
    true_kl = sum(a * ln(a / b) for a, b in zip(p, q))
    true_tv = sum(abs(a - b) for a, b in zip(p, q)) / 2
    top = lambda dist: sorted(((t, ln(v)) for t, v in enumerate(dist)), key=lambda e: -e[1])[:2]  # noqa: E731
    d = topk_divergence(0, ln(p[0]), ln(q[0]), top(p), top(q))
    assert 0 <= d.kl <= true_kl
    assert d.tv_low <= true_tv <= d.tv_high


def test_identical_distributions_have_no_divergence() -> None:
    top = [(1, ln(0.6)), (2, ln(0.3))]
    d = topk_divergence(1, ln(0.6), ln(0.6), top, top)
    assert d.kl == pytest.approx(0.0, abs=1e-15) and d.tv_low == pytest.approx(0.0, abs=1e-15)
    assert d.tv_high == pytest.approx(0.1)


def test_a_row_s_figures_and_its_flip() -> None:
    original = make_row(
        n=2, logprobs=[ln(0.5), ln(0.7)], top_logprobs=[[(10, ln(0.5)), (20, ln(0.3))], [(11, ln(0.7))]],
        token_texts={10: "a", 11: "b", 20: "z"},
    )  # fmt: skip
    replay = make_row(
        n=2, logprobs=[ln(0.4), ln(0.7)], top_logprobs=[[(20, ln(0.45)), (10, ln(0.4))], [(11, ln(0.7))]],
        token_texts={10: "a", 11: "b", 20: "z"}, ranks=[2, 1],
    )  # fmt: skip
    sums, flips = compare_replay_row(original, replay)
    stats = sums.statistics()
    assert (stats.positions, stats.compared, stats.top1_compared, stats.top1_agree, stats.would_flip) == (2, 2, 2, 1, 1)
    assert stats.max_abs_delta == pytest.approx(ln(0.5 / 0.4))
    assert stats.mean_abs_delta == pytest.approx(ln(0.5 / 0.4) / 2)
    assert stats.kl_mean == pytest.approx((0.0474687 + 0.0) / 2, abs=1e-7)
    assert stats.kl_max == pytest.approx(0.0474687, abs=1e-7)
    [flip] = flips
    assert (flip.index, flip.token, flip.token_text, flip.rank, flip.replay_top1, flip.replay_top1_text) == (0, 10, "a", 2, 20, "z")
    assert flip.margin == pytest.approx(ln(0.45) - ln(0.4))


def test_without_ranks_a_flip_is_read_from_the_top_k() -> None:
    row = make_row(n=1, logprobs=[ln(0.4)], top_logprobs=[[(20, ln(0.45)), (10, ln(0.4))]])
    assert [f.rank for f in compare_replay_row(row, row)[1]] == [None]
    tie = make_row(n=1, logprobs=[ln(0.4)], top_logprobs=[[(5, ln(0.4)), (10, ln(0.4))]])
    assert [f.margin for f in compare_replay_row(tie, tie)[1]] == [0.0]  # a tie that argmax gives to the lower id
    first = make_row(n=1, logprobs=[ln(0.4)], top_logprobs=[[(10, ln(0.4)), (20, ln(0.3))]])
    assert compare_replay_row(first, first)[1] == []


def test_setup_differences_leave_the_replay_description_out() -> None:
    a = make_header(backend_settings={"num_threads": 2})
    b = make_header(dtype="bfloat16", backend_settings={"num_threads": 2, "replay": {"method": "x"}})
    assert [(d.field, d.original, d.replay) for d in setup_differences(a, b)] == [("dtype", "float32", "bfloat16")]
    assert setup_differences(a, msgspec.structs.replace(a, backend_settings={"num_threads": 2, "replay": {}})) == []


# -- the recorded pair: goldens --------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("flag", "golden"), [(None, "report.txt"), ("--markdown", "report.md"), ("--json", "report.json"),
                                           ("--html", "report.html")])
def test_recorded_replay_reports_match_their_goldens(capsys, monkeypatch, flag, golden) -> None:
    monkeypatch.chdir(ROOT)
    argv = ["diff", "fixtures/recorded/replay-bf16/original.jsonl", "fixtures/recorded/replay-bf16/replay.jsonl"]
    code, out, err = _run(capsys, *argv, *([flag] if flag else []))
    assert (code, err) == (1, "")
    if golden == "report.html":  # the producer's version moves
        out = out.replace(f"<footer>detllm {__version__} ", "<footer>detllm VERSION ")
    path = RECORDED / golden
    if UPDATE:
        path.write_text(out)
    if golden == "report.json":  # the producer's version moves; everything else is fixed
        data, expected = json.loads(out), json.loads(path.read_text())
        data["producer"] = expected["producer"]
        assert data == expected
    else:
        assert out == path.read_text()


def test_recorded_bfloat16_replay_in_float32_measures_kl_and_names_flips(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    d = build_replay_report(RECORDED / "original.jsonl", RECORDED / "replay.jsonl")
    assert d.kind == "replay" and not d.verdict.baseline and not d.verdict.all_rank_1
    assert [(s.field, s.original, s.replay) for s in d.setup] == [("dtype", "bfloat16", "float32")]
    s = d.summary
    assert s.kl_mean is not None and s.kl_mean > 0 and s.max_abs_delta is not None and s.max_abs_delta > 1e-3
    flips = [(p.prompt_id, f.index) for p in d.prompts for f in p.flips]
    assert len(flips) == s.would_flip > 0
    for p in d.prompts:
        for f in p.flips:
            assert f.rank is not None and f.rank > 1 and f.margin >= 0
    text = (RECORDED / "report.txt").read_text()
    for prompt_id, index in flips:
        assert f"{prompt_id} @{index}:" in text


def test_replay_report_json_follows_the_report_schema(capsys, monkeypatch) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    monkeypatch.chdir(ROOT)
    schema = json.loads((ROOT / "formats" / "report-v1.schema.json").read_text())
    data = json.loads((RECORDED / "report.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(data)
    data["kind"] = "other"
    assert not jsonschema.Draft202012Validator(schema).is_valid(data)


# -- built traces: escaping, refusals, fallback ------------------------------------------------


HOSTILE = "\x1b[31m<b>*x*</b>|`\u202e"


def _pair(tmp_path: Path, *, digest_from_original: bool = True, token_ids=None) -> tuple[Path, Path]:
    original = write_trace(
        tmp_path / "original.jsonl",
        make_header(),
        [make_row(HOSTILE, token_texts={10: HOSTILE, 11: "b", 12: "c", 13: "d", 110: "e", 111: "f", 112: "g", 113: "h", 210: "i", 211: "j", 212: "k", 213: "l"})],
    )
    footer = json.loads(original.read_bytes().splitlines()[-1])
    digest = footer["digest"] if digest_from_original else "sha256:" + "0" * 64
    header = make_header(
        dtype="bfloat16", version=REPLAY_VERSION, replay=Replay(source_digest=digest, source_rows=1, source_name="original.jsonl")
    )
    row = make_row(HOSTILE, token_texts={10: HOSTILE, 110: "e"}, ranks=[2, 1, 1, 1])
    row = msgspec.structs.replace(row, top_logprobs=[[(110, -0.1), (10, -0.25)], *row.top_logprobs[1:]])
    if token_ids is not None:
        row = msgspec.structs.replace(row, token_ids=token_ids)
    replay = write_trace(tmp_path / "replay.jsonl", header, [row])
    return original, replay


def test_strings_from_the_traces_are_escaped(tmp_path: Path, capsys) -> None:
    original, replay = _pair(tmp_path)
    code, text, _ = _run(capsys, "diff", str(original), str(replay))
    assert code == 1
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[31m<b>*x*</b>|`\\u202e @0:" in text
    code, md, _ = _run(capsys, "diff", str(original), str(replay), "--markdown")
    assert "\x1b" not in md and "\u202e" not in md
    assert md.count("<b>") == md.count("``\\x1b[31m<b>*x*</b>\\|`\\u202e``") == 3  # only inside code spans
    code, data, _ = _run(capsys, "diff", str(original), str(replay), "--json")
    document = json.loads(data)
    assert document["prompts"][0]["prompt_id"] == HOSTILE  # JSON stays exact
    assert document["prompts"][0]["flips"][0]["token_text"] == HOSTILE
    assert document["prompts"][0]["flips"][0]["margin"] == pytest.approx(0.15)


def test_a_replay_of_another_trace_falls_back_to_a_plain_diff(tmp_path: Path, capsys) -> None:
    original, replay = _pair(tmp_path, digest_from_original=False)
    footer = json.loads(original.read_bytes().splitlines()[-1])
    code, out, err = _run(capsys, "diff", str(original), str(replay))
    assert err == (
        f"detllm: warning: {replay} is a replay of a trace with digest sha256:{'0' * 64}, not of {original} "
        f"(digest {footer['digest']}): comparing them as two runs\n"
    )
    assert out.startswith("detllm diff:") and "replay" not in out.splitlines()[0]


def test_the_replay_may_be_given_first(tmp_path: Path, capsys) -> None:
    original, replay = _pair(tmp_path)
    _, forward, _ = _run(capsys, "diff", str(original), str(replay), "--json")
    code, backward, err = _run(capsys, "diff", str(replay), str(original), "--json")
    assert (code, err) == (1, "")
    assert json.loads(backward) == json.loads(forward)
    assert json.loads(backward)["original"]["path"] == str(original)


def test_a_replay_with_other_tokens_is_refused(tmp_path: Path, capsys) -> None:
    original, replay = _pair(tmp_path, token_ids=[10, 11, 12, 99])
    code, out, err = _run(capsys, "diff", str(original), str(replay))
    assert (code, out) == (2, "")
    assert err == escape(f"detllm: {replay}:2: token_ids: prompt {HOSTILE!r} has other tokens than in the original") + "\n"


def test_the_html_page_of_a_replay_keeps_trace_strings_as_text(tmp_path: Path, capsys) -> None:
    from tests.html.test_html_report import ALLOWED, structure

    original, replay = _pair(tmp_path)
    code, page, err = _run(capsys, "diff", str(original), str(replay), "--html")
    assert (code, err) == (1, "")
    parsed = structure(page)
    assert parsed.errors == [] and parsed.stack == [] and {tag for tag, _ in parsed.tags} <= ALLOWED
    assert "\x1b" not in page and "\u202e" not in page and "<b>*x*" not in page
    text = "".join(parsed.texts)
    assert "\\x1b[31m<b>*x*</b>|`\\u202e" in text  # the prompt id and the token text, shown as text
    assert 'data-exit="1"' in page and f"<pre id=\"command\">detllm diff {original} {replay}</pre>" in page


def test_out_writes_the_four_reports(tmp_path: Path, capsys) -> None:
    original, replay = _pair(tmp_path)
    code, _, _ = _run(capsys, "diff", str(original), str(replay), "-q", "--out", str(tmp_path / "out"))
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.md", "report.txt"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["kind"] == "replay"


def test_a_run_directory_with_an_incomplete_trace_still_diffs_with_allow_incomplete(tmp_path: Path, capsys) -> None:
    from detllm import TraceWriter

    a = write_trace(tmp_path / "a.jsonl", make_header(), [make_row("p0"), make_row("p1")])
    crashed = tmp_path / "crashed"
    writer = TraceWriter(crashed / "trace.jsonl", make_header())
    writer.write(make_row("p0"))
    writer.abandon()
    code, out, err = _run(capsys, "diff", str(a), str(crashed), "--allow-incomplete")
    assert (code, err) == (1, "")
    assert "INCOMPLETE" in out

"""The HTML reports in a real headless Chromium: they load cleanly, fetch nothing, run
nothing, and read back the verdict and the grid the report model holds.

Each test saves a screenshot 1280 px wide under its tmp_path and prints the path.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from detllm._escape import text as shown
from detllm.diff import DiffReport, rebuild_check_report
from detllm.report import render_html
from tests.diff import test_diff_goldens as goldens

from ._chromium import Browser, Tab
from ._hostile import PROMPT_IDS, hostile_report
from ._large import large_check

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "fixtures" / "recorded" / "check-flip"
CASES = [*goldens.cases(), CHECK]

READ_BACK = """JSON.stringify({
  classification: document.getElementById('classification').textContent,
  exit: document.getElementById('exit').textContent,
  banner: document.getElementById('verdict').className,
  answers: [...document.querySelectorAll('#verdict .answers li')].map(li => li.textContent),
  grid: [...document.querySelectorAll('#grid tr')].slice(1).map(tr => ({
    id: tr.querySelector('td.pid').textContent,
    cells: [...tr.querySelectorAll('td[data-class]')].map(td => [td.dataset.class, td.textContent, td.title]),
  })),
  sections: document.querySelectorAll('section.prompt').length,
  charts: document.querySelectorAll('svg.chart').length,
  active: document.querySelectorAll('script, img, iframe, object, embed, link').length,
  width: document.documentElement.scrollWidth,
})"""


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _shoot(tab: Tab, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    shot = tab.screenshot(tmp_path / f"{name}.png")
    assert _png_size(shot)[0] == 1280
    with capsys.disabled():
        print(f"\nscreenshot: {shot}")
    return shot


def _clean(tab: Tab) -> None:
    load = tab.load
    assert load.console_errors == [] and load.exceptions == [] and load.log_errors == []
    assert set(load.requests) <= {load.url}, load.requests
    assert load.blocked == []


def _build(case: Path):  # type: ignore[no-untyped-def]
    if case == CHECK:
        return rebuild_check_report(CHECK)
    return goldens.build(case)


def _expected_grid(report) -> list[tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    """Per prompt, each run's classification, read from the report model directly."""
    if isinstance(report, DiffReport):
        return [(r.prompt_id, ["missing" if r.status == "right_only" else "baseline", r.classification])
                for r in report.prompts]
    if report.kind == "check":
        right_of = [c.right for c in report.comparisons]
        rows = []
        for p in report.prompts:
            by_run = {right_of[d.comparison]: d.result.classification for d in p.divergences}
            rows.append((p.prompt_id, ["baseline"] + [by_run.get(r, "identical") for r in range(1, len(report.runs))]))
        return rows
    rows = []
    for p in report.prompts:
        cells = []
        for r in range(len(report.runs)):
            v = next(v for v in p.variants if r in v.runs)
            cells.append("identical" if v.index == 0 else v.comparison.classification)
        rows.append((p.prompt_id, cells))
    return rows


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_page_in_chromium(
    browser: Browser, case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _build(case)
    tab = browser.load(case / "report.html")
    try:
        _clean(tab)
        seen = json.loads(tab.evaluate(READ_BACK))
        assert seen["classification"] == report.verdict.classification
        assert int(seen["exit"]) == report.exit_code()
        assert seen["banner"] == "banner " + {0: "pass", 1: "fail"}.get(report.exit_code(), "trouble")
        assert seen["answers"][0].startswith(("Tier 1", "repeatability"))
        expected = _expected_grid(report)
        assert [(row["id"], [c[0] for c in row["cells"]]) for row in seen["grid"]] == expected
        for row in seen["grid"]:
            for classification, text, title in row["cells"]:
                if text.isdigit():  # the first divergent index, as text and on hover
                    assert title.endswith(f"{classification} at token {text}"), title
        assert seen["active"] == 0
        assert seen["width"] <= 1280
        _shoot(tab, tmp_path, case.name, capsys)
    finally:
        tab.close()


def test_hostile_page_runs_nothing_and_keeps_its_layout(
    browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = hostile_report(tmp_path)
    page = tmp_path / "hostile.html"
    page.write_text(render_html(report), encoding="utf-8")
    tab = browser.load(page)
    try:
        _clean(tab)
        assert tab.evaluate("typeof window.__pwned") == "undefined"
        seen = json.loads(tab.evaluate(READ_BACK))
        assert seen["active"] == 0
        assert seen["width"] <= 1280
        assert seen["sections"] == 2 and seen["charts"] == 3  # two drift charts and the histogram
        ids = [row["id"] for row in seen["grid"]]
        assert ids == ["<script>window.__pwned=5</script>", "p\"1'<b>", "\\u202eDI tpmorp", "p\\x1b[2J\\x00"]
        assert ids[0] == PROMPT_IDS[0]
        # The prompt headings hold the ids as text, not as elements.
        headings = json.loads(tab.evaluate(
            "JSON.stringify([...document.querySelectorAll('section.prompt h3 code')].map(c => c.textContent))"))
        assert headings == [PROMPT_IDS[0], "p\"1'<b>"]
        # A long token beside a number does not squeeze the number into a column of digits.
        lines = json.loads(tab.evaluate(
            "JSON.stringify([...document.querySelectorAll('td.n')].filter(c => c.textContent).map(c => {"
            " const r = document.createRange(); r.selectNodeContents(c);"
            " return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; }))"))
        assert lines and set(lines) == {1}, lines
        _shoot(tab, tmp_path, "hostile", capsys)
    finally:
        tab.close()


def test_pages_read_the_same_with_scripts_turned_off(browser: Browser) -> None:
    pages = []
    for scripts in (True, False):
        tab = browser.load(CHECK / "report.html", scripts=scripts)
        try:
            _clean(tab)
            pages.append(json.loads(tab.evaluate(READ_BACK)))
        finally:
            tab.close()
    assert pages[0] == pages[1]
    assert pages[1]["classification"] == "near_tie_flip" and len(pages[1]["grid"]) == 8


def test_the_policy_is_what_stops_an_injected_script(browser: Browser, tmp_path: Path) -> None:
    # Were an unescaped string to slip through, the Content-Security-Policy still stops it:
    # inject a script and a remote image into a golden page and watch both refused.
    page = (CHECK / "report.html").read_text(encoding="utf-8")
    injected = page.replace("<body>", '<body><script>window.__ran = 1</script><img src="http://127.0.0.1:9/x.png">', 1)
    path = tmp_path / "injected.html"
    path.write_text(injected, encoding="utf-8")
    tab = browser.load(path)
    try:
        assert tab.evaluate("typeof window.__ran") == "undefined"
        assert not any("127.0.0.1" in url for url in tab.load.requests)
        assert tab.load.blocked == ["http://127.0.0.1:9/x.png (csp)"]
        refused = tab.load.console_errors + tab.load.log_errors
        assert any("Content Security Policy" in text for text in refused), refused
    finally:
        tab.close()


def test_a_large_check_page_in_chromium(browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "large.html"
    path.write_text(render_html(large_check(1000, 10)), encoding="utf-8")
    tab = browser.load(path)
    try:
        _clean(tab)
        seen = json.loads(tab.evaluate(READ_BACK))
        assert len(seen["grid"]) == 300 and all(len(row["cells"]) == 10 for row in seen["grid"])
        assert "This page summarises a large report" in tab.evaluate("document.getElementById('thinned').textContent")
        _shoot(tab, tmp_path, "large-check", capsys)
    finally:
        tab.close()


@pytest.mark.skipif(os.environ.get("DETLLM_WRITE_README_SCREENSHOT") != "1",
                    reason="writes docs/img/check-report.png; set DETLLM_WRITE_README_SCREENSHOT=1")
def test_write_readme_screenshot(browser: Browser) -> None:
    tab = browser.load(CHECK / "report.html", height=1000)
    try:
        out = ROOT / "docs" / "img" / "check-report.png"
        out.parent.mkdir(exist_ok=True)
        tab.screenshot(out, max_height=1000)
        assert _png_size(out) == (1280, 1000)
    finally:
        tab.close()


HOSTILE_IDS = ["<script>window.__pwned=1</script>", "p\u202eDI", "p\x1b[2J"]


def test_a_server_check_page_shows_its_concurrency_table(
    browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detllm.cli import main
    from tests.server.fake_server import MODEL, FakeServer

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": pid, "prompt": f"prompt {n}"}) + "\n" for n, pid in enumerate(HOSTILE_IDS)))
    out = tmp_path / "c"
    with FakeServer(delay=0.25, flip_when_crowded=True) as server:
        assert main(["check", "--backend", "openai", "--base-url", server.url, "--model", MODEL, "--prompt-file", str(prompts),
                     "--max-new-tokens", "6", "--runs", "2", "--concurrency", "1,3", "--out", str(out), "-q"]) == 1
    answer = json.loads((out / "report.json").read_text())["concurrency"]
    tab = browser.load(out / "report.html")
    try:
        _clean(tab)
        assert tab.evaluate("typeof window.__pwned") == "undefined"
        seen = json.loads(tab.evaluate(READ_BACK))
        assert seen["active"] == 0 and seen["width"] <= 1280
        assert "concurrency invariant: FAIL" in seen["answers"] and not any("batch" in a for a in seen["answers"])
        table = json.loads(tab.evaluate(
            "JSON.stringify([...document.querySelectorAll('table.concurrency tr')].slice(1)"
            ".map(tr => [...tr.cells].map(td => td.textContent)))"))
        assert [[int(row[0]), int(row[1]), int(row[2])] for row in table] == [
            [level["concurrency"], level["odd"], level["completions"]] for level in answer["levels"]]
        # The fake server flips a completion that shares the server when its delay ends:
        # all but the last of three at once, unless the machine is slow to send them.
        assert table[0][1] == "0" and int(table[1][1]) >= 1
        ids = json.loads(tab.evaluate(
            "JSON.stringify([...document.querySelectorAll('table.concurrency-prompts td:first-child code')]"
            ".map(c => c.textContent))"))
        # Shown as text, not run; controls and bidi overrides as visible escapes.
        assert ids == [shown(p["prompt_id"]) for p in answer["prompts"]] and set(ids) <= {shown(i) for i in HOSTILE_IDS}
        assert ids and HOSTILE_IDS[0] in ids and "p\\u202eDI" in ids
        _shoot(tab, tmp_path, "server-check", capsys)
    finally:
        tab.close()


def test_a_sweep_page_shows_each_variant(browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.diff._sweep_report import HOSTILE_NAME, sweep_check_report

    report = sweep_check_report(tmp_path / "check")
    assert HOSTILE_NAME in [v.name for v in report.sweep.variants]
    page = tmp_path / "sweep.html"
    page.write_text(render_html(report), encoding="utf-8")
    tab = browser.load(page)
    try:
        _clean(tab)
        seen = json.loads(tab.evaluate(READ_BACK))
        assert "engine settings stable: FAIL" in seen["answers"]
        assert tab.evaluate("typeof window.__pwned") == "undefined" and seen["active"] == 0
        rows = json.loads(tab.evaluate(
            "JSON.stringify([...document.querySelectorAll('table.sweep tr')].slice(1)"
            ".map(tr => [...tr.cells].map(td => td.textContent)))"))
        expected = []
        for variant in report.sweep.variants:
            for c in variant.comparisons or [None]:
                expected.append([shown(variant.name) if c is None or len(variant.comparisons) == 1 else shown(f"{variant.name} ({c.role})"),
                                 "-" if c is None else f"{c.tokens_stable}/{c.prompts}"])
        assert [[row[0], row[2]] for row in rows] == expected
        assert tab.evaluate("document.getElementById('sweep-text').textContent") == shown(report.sweep.verdict.text)
        _shoot(tab, tmp_path, "sweep", capsys)
    finally:
        tab.close()


REPLAY_READ_BACK = """JSON.stringify({
  title: document.title,
  exit: document.getElementById('exit').textContent,
  banner: document.getElementById('verdict').className,
  heading: document.getElementById('classification').textContent,
  flips: [...document.querySelectorAll('table.flips tr')].slice(1).map(tr => [...tr.cells].map(td => td.textContent)),
  prompts: [...document.querySelectorAll('table.prompts tr')].slice(1).map(tr => tr.cells[0].textContent),
  setup: [...document.querySelectorAll('table.setup tr')].slice(1).map(tr => [...tr.cells].map(td => td.textContent)),
  sides: [...document.querySelectorAll('table.sides tr')].slice(1).map(tr => [...tr.cells].map(td => td.textContent)),
  command: document.getElementById('command').textContent,
  active: document.querySelectorAll('script, img, iframe, object, embed, link').length,
  width: document.documentElement.scrollWidth,
})"""


def test_a_replay_page_runs_nothing_and_reads_back_its_flips(
    browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ._hostile import HOSTILE, hostile_replay

    report = hostile_replay(tmp_path)
    page = tmp_path / "replay.html"
    page.write_text(render_html(report), encoding="utf-8")
    tab = browser.load(page)
    try:
        _clean(tab)
        assert tab.evaluate("typeof window.__pwned") == "undefined"
        seen = json.loads(tab.evaluate(REPLAY_READ_BACK))
        assert seen["active"] == 0 and seen["width"] <= 1280
        assert (int(seen["exit"]), seen["banner"]) == (report.exit_code(), "banner fail") == (1, "banner fail")
        assert seen["heading"] == "replay under another setup: 4 of 16 recorded tokens would flip"
        # Each prompt id, token text and setting as text (controls and bidi as visible escapes), in the report's order.
        assert [row[0] for row in seen["flips"]] == [shown(p.prompt_id) for p in report.prompts for _ in p.flips]
        assert seen["prompts"] == [shown(pid) for pid in PROMPT_IDS] and seen["prompts"][0] == PROMPT_IDS[0]
        first = report.prompts[0].flips[0]
        assert seen["flips"][0][1:4] == [str(first.index), f'"{shown(HOSTILE[0])}" (10)', "2"]
        assert seen["setup"] == [["dtype", "float32", "bfloat16</td><script>window.__pwned=8</script>"]]
        assert dict((row[0], row[1:]) for row in seen["sides"])["dtype / device"] == [
            f"float32 / {HOSTILE[0]}", f"bfloat16</td><script>window.__pwned=8</script> / {HOSTILE[0]}"]
        assert seen["command"] == shown(f"detllm diff '{report.original.path}' '{report.replay.path}'")
        _shoot(tab, tmp_path, "replay", capsys)
    finally:
        tab.close()


def test_a_bisect_page_runs_nothing_and_reads_back_its_ranking(browser: Browser, tmp_path: Path) -> None:
    from ._hostile import HOSTILE, hostile_bisect

    report = hostile_bisect()
    page = tmp_path / "bisect.html"
    page.write_text(render_html(report), encoding="utf-8")
    tab = browser.load(page)
    try:
        _clean(tab)
        assert tab.evaluate("typeof window.__pwned") == "undefined"
        seen = json.loads(tab.evaluate(
            "JSON.stringify({exit: document.getElementById('exit').textContent,"
            " heading: document.getElementById('classification').textContent,"
            " runs: [...document.querySelectorAll('table.reruns tr')].slice(1).map(tr => [...tr.cells].map(td => td.textContent)),"
            " setup: [...document.querySelectorAll('table.setup tr')].slice(1).map(tr => [...tr.cells].map(td => td.textContent)),"
            " active: document.querySelectorAll('script, img, iframe, object, embed, link').length,"
            " width: document.documentElement.scrollWidth})"))
        assert seen["active"] == 0 and seen["width"] <= 1280
        assert (seen["exit"], seen["heading"]) == ("1", HOSTILE[8])
        assert [row[:2] for row in seen["runs"]] == [["control", "cleared"], [HOSTILE[8], "reproduces"], [shown(HOSTILE[5]), "cleared"]]
        assert seen["setup"] == [[HOSTILE[3], shown(HOSTILE[6]), json.dumps({"k": HOSTILE[7]}, separators=(",", ":"))]]
    finally:
        tab.close()

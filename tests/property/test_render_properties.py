"""Properties of every rendering: what a trace, a report file or a file name says cannot escape.

Arbitrary strings and the attack corpus go into every field a renderer shows (model,
backend, dtype, device, header member names and values, prompt ids, finish reasons,
token texts, and every free string of a saved diff, aggregate or check report). Then:

- text: no control, bidi or invisible format character reaches the output;
- Markdown: the same, no raw ``<`` outside code spans but the renderer's own
  ``<details>`` tags, table rows keep their header's column count, and the output has
  exactly as many lines (so headings and rows) as with harmless strings in the same
  places;
- error lines: one line, no invisible character.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detllm.cli import main
from detllm.diff import aggregate_traces, diff_traces
from detllm.report import load_report, render_json, render_markdown, render_text
from detllm.trace import Artifact, Decoding, Logprobs, Row, Software
from tests.diff._traces import header, write

from .strategies import hostile_texts

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[2]
CHECK_REPORT = ROOT / "fixtures" / "recorded" / "check-flip" / "report.json"

INVISIBLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff\U000e0000-\U000e007f]")
"""What must never reach a terminal or a Markdown file raw (the newline between lines aside)."""
OWN_TAGS = ("<details><summary>Runs</summary>", "</details>")


def _code_spans_removed(line: str) -> str:
    """``line`` without its CommonMark code spans: a run of n backticks to the next run of exactly n."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "`" and (i == 0 or line[i - 1] != "\\"):
            run = re.match("`+", line[i:]).group()  # type: ignore[union-attr]
            close = re.compile(f"(?<!`){run}(?!`)")
            match = close.search(line, i + len(run))
            if match:
                i = match.end()
                continue
            out.append(run)
            i += len(run)
            continue
        out.append(line[i])
        i += 1
    return "".join(out)


def _cells(line: str) -> int:
    """Cells of a table row: pipes not escaped by a backslash (an escaped backslash does not count)."""
    bare = re.sub(r"\\\\", "", line)
    return len(re.findall(r"(?<!\\)\|", bare)) - 1


def check_text(output: str) -> None:
    for line in output.split("\n"):
        assert not INVISIBLE.search(line), repr(line)


def check_markdown(output: str) -> None:
    check_text(output)
    lines = output.split("\n")
    columns = None
    for i, line in enumerate(lines):
        assert "<" not in _code_spans_removed(line.replace(OWN_TAGS[0], "").replace(OWN_TAGS[1], "")), line
        if line.startswith("#"):
            assert re.match(r"#{3,4} \S", line), line
        if line.startswith("|"):
            if columns is None:
                columns = _cells(line)
                assert i + 1 < len(lines) and re.fullmatch(r"\|(-+:?\|)+|\|(-*:?-+:?\|)+", lines[i + 1].replace(" ", "")), lines[i + 1]
            assert _cells(line) == columns, line
        else:
            columns = None


def _harmless(value: Any, names: dict[str, str]) -> Any:
    """``value`` with each string replaced by a harmless one, the same for equal strings."""
    if isinstance(value, str):
        return names.setdefault(value, f"s{len(names)}") if value else value
    if isinstance(value, dict):
        return {_harmless(k, names): _harmless(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_harmless(v, names) for v in value]
    return value


@st.composite
def hostile_fields(draw: st.DrawFn) -> dict[str, Any]:
    """Every string a trace pair shows, drawn hostile; prompt ids unique and non-empty."""
    pids = draw(st.lists(hostile_texts.filter(bool), min_size=3, max_size=3, unique=True))
    return {
        "model": [draw(hostile_texts), draw(hostile_texts)],
        "backend": [draw(hostile_texts), draw(hostile_texts)],
        "version": draw(hostile_texts),
        "dtype": [draw(hostile_texts), draw(hostile_texts)],
        "device": draw(hostile_texts),
        # Not "n": the traces' backend_settings hold an "n" of their own, which it would replace.
        "setting": draw(hostile_texts.filter(lambda s: s != "n")),
        "values": [draw(hostile_texts), draw(hostile_texts)],
        "extra": draw(hostile_texts),
        "pids": pids,
        "finish": draw(hostile_texts.filter(bool)),
        "texts": draw(st.lists(hostile_texts, min_size=6, max_size=6)),
    }


def _row(pid: str, tokens: list[int], finish: str, texts: list[str]) -> Row:
    lps = [-0.25 - 0.01 * i for i in range(len(tokens))]
    top = [[(t, lp), (5 if t != 5 else 4, lp - 1.0)] for t, lp in zip(tokens, lps)]
    used = sorted({t for step in top for t, _ in step})
    return Row(
        prompt_id=pid, input_token_ids=[1, 2], token_ids=tokens, logprobs=lps, top_logprobs=top,
        finish_reason=finish, token_texts={t: texts[t] for t in used},
    )  # fmt: skip


def _traces(d: Path, f: dict[str, Any]) -> list[Path]:
    """Two traces of the same run that differ in every header string and in a token of one prompt."""
    paths = []
    for side in (0, 1):
        h = header(
            backend=Software(name=f["backend"][side], version=f["version"]),
            model=Artifact(id=f["model"][side]),
            dtype=f["dtype"][side],
            device=f["device"],
            decoding=Decoding(do_sample=False, max_new_tokens=8, extra={f["extra"]: f["values"][side]}),
            logprobs=Logprobs(semantics="raw", top_k=2),
            backend_settings={f["setting"]: f["values"][side], "n": side},
            labels={f["setting"]: f["values"][side]},
        )
        a, b, only = f["pids"]
        tokens = [0, 1, 2, 3] if side == 0 else [0, 1, 3, 2]
        rows = [_row(a, tokens, f["finish"], f["texts"]), _row(b, [0, 1][: side + 1], f["finish"], f["texts"])]
        rows.append(_row(only + "/" * side, [2], "stop", f["texts"]))
        paths.append(write(d / f"t{side}.jsonl", rows, h))
    return paths


def _renderings(f: dict[str, Any]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as d:
        left, right = _traces(Path(d), f)
        diff = diff_traces(left, right)
        aggregate = aggregate_traces([left, right, right])
        out = {}
        for name, report in (("diff", diff), ("aggregate", aggregate)):
            out[f"{name} text"] = render_text(report)
            out[f"{name} markdown"] = render_markdown(report)
            out[f"{name} json"] = render_json(report)
        return out


@SETTINGS
@given(hostile_fields())
def test_trace_strings_cannot_escape_text_or_markdown(fields: dict[str, Any]) -> None:
    hostile = _renderings(fields)
    names: dict[str, str] = {}
    harmless = _renderings({k: _harmless(v, names) for k, v in fields.items()})
    for name, output in hostile.items():
        if name.endswith("json"):
            continue
        (check_markdown if name.endswith("markdown") else check_text)(output)
        if name.endswith("markdown"):
            assert output.count("\n") == harmless[name].count("\n"), name


def test_json_output_keeps_every_string_exact() -> None:
    fields = {
        "model": ["\x1b[2J<b>", "m\u202e"], "backend": ["<script>", "b"], "version": "v\n", "dtype": ["|", "d"],
        "device": "\r", "setting": "# h", "values": ["`", "x"], "extra": "e", "pids": ["p\n1", "p|2", "<p3>"],
        "finish": "stop\x07", "texts": ["\x1b", "\u202e", "<", "\n", "|", "`"],
    }  # fmt: skip
    diff = json.loads(_renderings(fields)["diff json"])
    assert diff["left"]["model"] == "\x1b[2J<b>"
    assert {p["prompt_id"] for p in diff["prompts"]} >= {"p\n1", "p|2"}


FREE = {"prompt_id", "name", "path", "backend", "model", "dtype", "device", "text", "composition", "field", "note", "reason"}
"""Members of a saved report whose strings are free: a report file can say anything there."""


def _poisoned(document: Any, draw: Callable[[], str]) -> Any:
    if isinstance(document, dict):
        return {
            k: (draw() if k in FREE and isinstance(v, str) else [draw() for _ in v] if k == "notes" else _poisoned(v, draw))
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [_poisoned(v, draw) for v in document]
    return document


def _saved_reports() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as d:
        fields = {
            "model": ["m0", "m1"], "backend": ["b", "b"], "version": "1", "dtype": ["float32", "bfloat16"],
            "device": "cpu", "setting": "s", "values": ["x", "y"], "extra": "e", "pids": ["a", "b", "c"],
            "finish": "length", "texts": ["t0", "t1", "t2", "t3", "t4", "t5"],
        }  # fmt: skip
        left, right = _traces(Path(d), fields)
        made = [json.loads(render_json(diff_traces(left, right))), json.loads(render_json(aggregate_traces([left, right, right])))]
    return [*made, json.loads(CHECK_REPORT.read_text())]


SAVED = _saved_reports()


@SETTINGS
@given(st.sampled_from(range(len(SAVED))), st.data())
def test_saved_report_strings_cannot_escape_text_or_markdown(which: int, data: st.DataObject) -> None:
    document = _poisoned(SAVED[which], lambda: data.draw(hostile_texts))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "report.json"
        path.write_text(json.dumps(document))
        report = load_report(path)
        check_text(render_text(report))
        check_markdown(render_markdown(report))


@SETTINGS
@given(hostile_texts.filter(bool))
def test_an_error_line_naming_a_hostile_file_is_one_safe_line(name: str) -> None:
    safe_name = name.replace("/", "_").replace("\x00", "_")
    if safe_name in (".", ".."):
        safe_name += "_"
    with tempfile.TemporaryDirectory() as d:
        missing = str(Path(d) / safe_name)
        for argv in (["validate", missing], ["diff", missing, missing], ["report", missing, missing, missing]):
            capture = _Capture()
            with capture:
                code = main(argv)
            assert code == 2
            first = capture.err.split("\n")[0]
            assert first.startswith("detllm: ") and "no such file" in first.lower()  # the whole message on its line
            check_text(capture.err)


class _Capture:
    """stderr of an in-process command, without pytest's fixture (hypothesis reruns the test)."""

    def __enter__(self) -> None:
        import io
        import sys

        self._saved = sys.stderr, sys.stdout
        sys.stderr, sys.stdout = io.StringIO(), io.StringIO()

    def __exit__(self, *exc: object) -> None:
        import sys

        self.err = sys.stderr.getvalue()  # type: ignore[attr-defined]
        sys.stderr, sys.stdout = self._saved


@pytest.mark.parametrize(
    ("line", "cells"), [("| a | b |", 2), ("| `x\\|y` | b |", 2), ("| a \\\\| b |", 2), ("| a \\| b |", 1)]
)
def test_the_cell_counter_counts_unescaped_pipes(line: str, cells: int) -> None:
    assert _cells(line) == cells

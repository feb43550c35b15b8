"""Traces built to be hostile: every command gives validate's one line, exit 2, and leaves nothing behind.

The traces are the hostile fixtures under ``fixtures/traces/invalid`` that a reader
could once decode (so ``validate`` accepted them, and other commands crashed or
disagreed with it), and copies of the recorded check directory with one trace made
hostile in the same ways.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detllm import open_trace
from detllm.cli import main

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "fixtures" / "traces" / "invalid"
GOOD = ROOT / "fixtures" / "traces" / "valid" / "minimal.jsonl"
CHECK = ROOT / "fixtures" / "recorded" / "check-flip"

ONCE_CRASHING = [
    "token-id-too-large",
    "max-new-tokens-too-large",
    "seed-too-large",
    "setting-integer-too-large",
    "setting-nested-too-deep",
    "extra-nested-too-deep",
    "repeated-member-row",
    "repeated-member-token-texts",
    "repeated-member-header",
    "repeated-member-footer",
]


def _expected(name: str) -> str:
    """validate's first finding for the fixture, as another command prints it."""
    return "detllm: " + (INVALID / f"{name}.expected").read_text().splitlines()[0] + "\n"


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("name", ONCE_CRASHING)
@pytest.mark.parametrize(
    "command",
    [
        ["diff", "--json", "GOOD", "BAD"],
        ["diff", "GOOD", "BAD", "--out", "OUT"],
        ["diff", "--markdown", "BAD", "GOOD"],
        ["report", "--json", "GOOD", "GOOD", "BAD"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_command_gives_validates_line_and_exit_2(
    name: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = f"fixtures/traces/invalid/{name}.jsonl"
    good = str(GOOD.relative_to(ROOT))
    argv = [{"GOOD": good, "BAD": bad, "OUT": str(tmp_path / "out")}.get(a, a) for a in command]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err == _expected(name)
    assert out == ""


def _rewrite(path: Path, header: bytes | None = None, row: tuple[int, bytes, bytes] | None = None) -> None:
    """Change a trace's header line, or one replacement in row ``row[0]``, keeping its footer right."""
    lines = path.read_bytes().split(b"\n")[:-1]
    if header is not None:
        lines[0] = header
    if row is not None:
        index, old, new = row
        assert old in lines[index]
        lines[index] = lines[index].replace(old, new, 1)
    rows = lines[1:-1]
    digest = hashlib.sha256(b"".join(r + b"\n" for r in rows)).hexdigest()
    footer = json.loads(lines[-1])
    footer["digest"] = f"sha256:{digest}"
    lines[-1] = json.dumps(footer, separators=(",", ":")).encode()
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _hostile_check(tmp_path: Path, how: str) -> Path:
    check = tmp_path / "check"
    shutil.copytree(CHECK, check)
    trace = check / "traces" / "bs4-in-order.jsonl"
    first = trace.read_bytes().split(b"\n", 1)[0]
    if how == "deep":
        _rewrite(trace, header=first.replace(b'"backend_settings":{', b'"backend_settings":{"x":' + b"[" * 260 + b"]" * 260 + b","))
    elif how == "huge":
        _rewrite(trace, row=(1, b'"token_ids":[', b'"token_ids":[18446744073709551616,'))
    elif how == "repeated":
        _rewrite(trace, row=(1, b'"prompt_id":"', b'"prompt_id":"elsewhere","prompt_id":"'))
    return check


@pytest.mark.parametrize("how", ["deep", "huge", "repeated"])
def test_pack_of_hostile_input_exits_2_and_leaves_no_partial_file(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check = _hostile_check(tmp_path, how)
    trace = check / "traces" / "bs4-in-order.jsonl"
    assert main(["validate", "-q", str(trace)]) == 1
    finding = capsys.readouterr().out.splitlines()[0]
    for out in (tmp_path / "pack", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        assert main(["pack", str(check), "--out", str(out), "--all"]) == 2
        assert capsys.readouterr().err == f"detllm: {finding}\n"
        assert not out.exists() or not any(out.iterdir())  # a retry is not refused
    assert main(["pack", str(CHECK), "--out", str(tmp_path / "empty"), "-q"]) == 0


def test_pack_refuses_a_diverging_prompt_that_run_config_does_not_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check = tmp_path / "check"
    shutil.copytree(CHECK, check)
    config = json.loads((check / "run_config.json").read_text())
    kept = json.loads((CHECK / "report.json").read_text())
    diverging = next(p["prompt_id"] for p in kept["prompts"] if p["divergences"])
    config["prompts"] = [p for p in config["prompts"] if p["id"] != diverging]
    (check / "run_config.json").write_text(json.dumps(config))
    assert main(["pack", str(check), "--out", str(tmp_path / "pack")]) == 2
    assert capsys.readouterr().err == (
        f"detllm: {check / 'run_config.json'}: prompt {diverging!r} of the check's traces is not in its prompts\n"
    )
    assert not (tmp_path / "pack").exists()


def test_pack_counts_only_the_rows_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check = tmp_path / "check"
    shutil.copytree(CHECK, check)
    config = json.loads((check / "run_config.json").read_text())
    config["prompts"].append({"id": "not-in-any-trace", "prompt": "x"})
    (check / "run_config.json").write_text(json.dumps(config))
    assert main(["pack", str(check), "--out", str(tmp_path / "pack"), "--all"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"detllm: {check / 'traces'}") and "has no row for prompt 'not-in-any-trace'" in err
    assert not (tmp_path / "pack").exists()


def _cuts(data: bytes) -> list[tuple[str, int, bytes]]:
    """Every cut inside the footer line and inside the last row: (where, rows before it, bytes)."""
    lines = data.split(b"\n")
    footer_start = len(data) - len(lines[-2]) - 1
    row_start = footer_start - len(lines[-3]) - 1
    rows = len(lines) - 3
    cuts = [("footer", rows, data[: footer_start + n]) for n in range(1, len(lines[-2]))]
    return cuts + [("row", rows - 1, data[: row_start + n]) for n in range(1, len(lines[-3]))]


def test_allow_incomplete_counts_the_rows_a_cut_trace_has(tmp_path: Path) -> None:
    wrong = []
    for where, rows, data in _cuts(GOOD.read_bytes()):
        path = tmp_path / "cut.jsonl"
        path.write_bytes(data)
        with open_trace(path, allow_incomplete=True) as reader:
            read = sum(1 for _ in reader)
            if not reader.complete and (read, reader.rows_read) != (rows, rows):
                wrong.append((where, len(data), read, reader.rows_read))
    assert wrong == []


def test_diff_note_on_a_trace_cut_inside_its_footer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = GOOD.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: data.rindex(b'{"record":"footer"') + 10])
    main(["diff", str(GOOD), str(cut), "--allow-incomplete"])
    assert "its 3 complete rows were compared" in capsys.readouterr().out


def test_validate_refuses_an_empty_path_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", ""]) == 2
    assert capsys.readouterr().err == "detllm: an empty path is not a trace file or directory\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/proc/self/pagemap"])
@pytest.mark.parametrize("command", [["validate", "-q"], ["diff", "GOOD"], ["report", "GOOD", "GOOD"]], ids=lambda c: c[0])
def test_what_is_not_a_regular_file_is_refused_without_reading(kind: str, command: list[str], tmp_path: Path) -> None:
    if kind == "fifo":
        path = tmp_path / "trace.jsonl"
        os.mkfifo(path)
        what = "a FIFO"
    else:
        path = Path(kind)
        if not path.exists():
            pytest.skip(f"no {kind} here")
        what = "a character device" if kind == "/dev/zero" else "a file of /proc"
    argv = [str(GOOD) if a == "GOOD" else a for a in command] + [str(path)]
    # A reader that opens a FIFO with no writer, or reads /dev/zero, never returns: a subprocess with a timeout.
    result = subprocess.run(
        [sys.executable, "-m", "detllm", *argv], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 2
    assert f"detllm: {path}: is {what}, not a regular file: a trace is read from a file\n" in result.stderr


def test_pack_readme_shows_a_hostile_directory_name_as_text(tmp_path: Path) -> None:
    from tests.property.test_render_properties import INVISIBLE

    readmes = {}
    for name in ("plain", "ch`<img src=x onerror=alert(1)>\x1b[2J\n# injected\n| a | b |"):
        source = tmp_path / name
        shutil.copytree(CHECK, source)
        assert main(["pack", str(source), "--out", str(tmp_path / f"pack-{len(readmes)}"), "-q"]) == 0
        readmes[name] = (tmp_path / f"pack-{len(readmes)}" / "README.md").read_text()
    plain, hostile = readmes.values()
    assert not INVISIBLE.search(hostile)
    assert hostile.count("\n") == plain.count("\n")
    assert [line for line in hostile.split("\n") if line.startswith("#")] == [
        line for line in plain.split("\n") if line.startswith("#")
    ]
    assert "\\x1b[2J\\n# injected\\n" in hostile


def test_a_saved_report_and_a_prompt_file_with_a_repeated_member_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detllm.capture.prompts import load_prompt_file
    from detllm.errors import PromptFileError, TraceFormatError

    text = (CHECK / "report.json").read_text()
    report = tmp_path / "report.json"
    report.write_text(text.replace('"kind": "check",', '"kind": "check", "kind": "diff",', 1))
    assert main(["report", str(report)]) == 2
    assert capsys.readouterr().err == (
        f"detllm: {report}:0: kind: member repeated: an object must not have two members of one name\n"
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y", "id": "a"}\n')
    with pytest.raises(PromptFileError) as error:
        load_prompt_file(prompts)
    assert str(error.value) == f"{prompts}:2: id: member repeated: an object must not have two members of one name"
    assert not isinstance(error.value, TraceFormatError)

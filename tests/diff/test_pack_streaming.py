"""``detllm pack`` read one comparison and one row at a time: the same pack as from the check report."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import msgspec
import pytest

from detllm.cli import main
from detllm.diff import _align, _seen, rebuild_check_report
from detllm.report import load_report
from detllm.rundir import plan_runs
from detllm.report._load import load_check_statuses
from detllm.report._pack import diverging_prompts, make_pack
from tests.diff._traces import flip_at, header, rows, write

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "fixtures" / "recorded" / "check-flip"


def _files(pack: Path) -> dict[str, bytes]:
    return {p.relative_to(pack).as_posix(): p.read_bytes() for p in sorted(pack.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("tier", [1, 2])
def test_a_check_without_its_report_packs_as_with_it(tmp_path: Path, tier: int) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(CHECK, bare)
    (bare / "report.json").unlink()
    with_report = make_pack(CHECK, tmp_path / "a", tier=tier)
    without = make_pack(bare, tmp_path / "b", tier=tier)
    assert without.prompts == with_report.prompts == diverging_prompts(load_report(CHECK / "report.json"), tier)
    assert without.total == with_report.total
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith(".jsonl") or name.startswith("diffs/"):
            assert a[name] == b[name], name


def _check_dir(directory: Path, n: int, flips: set[int]) -> None:
    planned = plan_runs(2, [1, 8], [])
    data = rows(n, length=3)
    for run in planned:
        changed = run.batch_size != 1
        write(directory / run.path, [flip_at(r, 1) if changed and i in flips else r for i, r in enumerate(data)],
              header(batch=msgspec.structs.replace(header().batch, size=run.batch_size)))
    document = {
        "format": "detllm.run_config", "version": "1.0", "command": ["detllm", "check"],
        "config": {"model": "test/model", "backend": "hf", "max_new_tokens": 3},
        "prompts": [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(n)],
        "check": {"runs": 2, "batch_sizes": [1, 8], "compositions": [], "traces": msgspec.to_builtins(planned)},
    }  # fmt: skip
    (directory / "run_config.json").write_text(json.dumps(document))
    (directory / "env.json").write_text("{}\n")
    determinism = {"format": "detllm.determinism", "version": "1.0", "mode": "best-effort", "complete": True, "unavailable": {}}
    (directory / "determinism_applied.json").write_text(json.dumps(determinism))


def test_a_pack_of_many_rows_keeps_exactly_the_diverging_ones(tmp_path: Path) -> None:
    n, flips = 3000, set(range(7, 3000, 97))
    source = tmp_path / "check"
    _check_dir(source, n, flips)
    expected = [f"p{i}" for i in sorted(flips)]
    assert diverging_prompts(rebuild_check_report(source), 1) == expected
    out = tmp_path / "pack"
    assert main(["pack", str(source), "--out", str(out), "-q"]) == 0
    config = json.loads((out / "run_config.json").read_text())
    assert config["pack"]["kept"] == expected and config["pack"]["prompts"] == n
    assert [p["id"] for p in config["prompts"]] == expected
    assert [json.loads(line)["id"] for line in (out / "prompts.jsonl").read_text().splitlines()] == expected
    for trace in sorted((source / "traces").glob("*.jsonl")):
        kept = [line for line in trace.read_bytes().splitlines()[1:-1] if json.loads(line)["prompt_id"] in set(expected)]
        assert (out / "traces" / trace.name).read_bytes().splitlines()[1:-1] == kept
    assert main(["validate", *map(str, sorted((out / "traces").glob("*.jsonl")))]) == 0
    assert f"the original check, on all {n} prompts" in (out / "README.md").read_text().lower()


def test_a_saved_check_report_is_read_as_it_goes_with_the_statuses_load_report_gives(tmp_path: Path) -> None:
    source = tmp_path / "check"
    _check_dir(source, 300, set(range(3, 300, 41)))
    assert main(["report", str(source), "--out", str(source), "-q"]) == 1
    full = load_report(source / "report.json")
    head, statuses = load_check_statuses(source / "report.json")
    assert head.prompts == [] and head.options == full.options and head.runs == full.runs  # streamed: no prompts held
    assert statuses == [(p.prompt_id, frozenset(d.result.status for d in p.divergences)) for p in full.prompts if p.divergences]
    assert [pid for pid, _ in statuses] == diverging_prompts(full, 1) == [f"p{i}" for i in range(3, 300, 41)]
    compact = tmp_path / "compact.json"  # another layout: loaded whole, the same answer
    compact.write_bytes(json.dumps(json.loads((source / "report.json").read_text())).encode())
    whole, again = load_check_statuses(compact)
    assert again == statuses and whole.prompts == full.prompts


def _spoiled(tmp_path: Path, old: bytes, new: bytes) -> Path:
    source = tmp_path / "check"
    _check_dir(source, 40, {5, 9})
    assert main(["report", str(source), "--out", str(source), "-q"]) == 1
    data = (source / "report.json").read_bytes()
    assert old in data
    (source / "report.json").write_bytes(data.replace(old, new, 1))
    return source


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        (b'"status": "tokens_diverge"', b'"status": "bogus"', "prompts[5].divergences[0].result.status",
         "invalid enum value 'bogus'"),
        (b'"status": "tokens_diverge"', b'"status": "identical", "status": "tokens_diverge"',
         "prompts[5].divergences[0].result.status", "repeated"),
        (b'"comparison": 1', b'"comparison": "1"', "prompts[5].divergences[0].comparison", "expected int, got str"),
    ],
)
def test_a_bad_member_pack_uses_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: bytes, new: bytes, field: str, problem: str
) -> None:
    source = _spoiled(tmp_path, old, new)
    assert main(["pack", str(source), "--out", str(tmp_path / "pack")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(source / "report.json") in err and field in err and problem in err.lower(), err
    assert not (tmp_path / "pack").exists()


def test_past_the_id_table_limit_a_pack_is_the_same_and_a_duplicate_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "check"
    _check_dir(source, 300, set(range(3, 300, 41)))
    assert main(["pack", str(source), "--out", str(tmp_path / "table"), "-q"]) == 0
    monkeypatch.setattr(_seen, "LIMIT", 4)
    monkeypatch.setattr(_align, "LIMIT", 4)
    assert main(["pack", str(source), "--out", str(tmp_path / "log"), "-q"]) == 0
    assert _files(tmp_path / "log").keys() == _files(tmp_path / "table").keys()
    for name, data in _files(tmp_path / "table").items():
        if name.endswith((".jsonl", ".json")) and name != "run_config.json":
            assert _files(tmp_path / "log")[name] == data, name
    trace = source / "traces" / "bs8-in-order.jsonl"
    lines = trace.read_bytes().splitlines()
    body = [*lines[1:-1], lines[200]]  # row 199's prompt id once more, at line 302
    digest = hashlib.sha256(b"".join(line + b"\n" for line in body)).hexdigest()
    footer = json.dumps({"record": "footer", "rows": len(body), "digest": f"sha256:{digest}"}, separators=(",", ":"))
    trace.write_bytes(b"\n".join([lines[0], *body, footer.encode()]) + b"\n")
    assert main(["pack", str(source), "--out", str(tmp_path / "dup"), "--all", "-q"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{trace}:302: prompt_id: duplicate prompt id 'p199'")


def test_a_pack_writes_its_run_config_as_capture_does(tmp_path: Path) -> None:
    # One writer for run_config.json: the pack's bytes are the run-directory writer's, and
    # the recorded check's (written by capture) are too.
    from detllm.rundir import write_document

    make_pack(CHECK, tmp_path / "pack", tier=1)
    for path in (CHECK / "run_config.json", tmp_path / "pack" / "run_config.json"):
        again = tmp_path / "again.json"
        write_document(again, json.loads(path.read_bytes()))
        assert again.read_bytes() == path.read_bytes(), path
    assert not list((tmp_path / "pack").rglob("*.partial"))


def _run_with_a_large_row(directory: Path, big: bytes | None = None) -> tuple[Path, bytes]:
    """A run directory whose trace holds a small row and a row of more than a megabyte
    (``big``, its line as given, or its canonical line), third line of the trace."""
    import random

    from detllm._canonical import CHUNK_BYTES
    from detllm.trace import Decoding, encode
    from tests.diff._traces import row

    steps = 10_000
    head = header(decoding=Decoding(do_sample=False, max_new_tokens=steps))
    small, large = row("small", random.Random(1), 3), row("big", random.Random(2), steps)
    canonical = encode(large)
    assert len(canonical) > CHUNK_BYTES
    directory.mkdir()
    trace = write(directory / "trace.jsonl", [small, large], head)
    if big is not None:
        lines = trace.read_bytes().splitlines()
        body = [lines[1], big]
        digest = hashlib.sha256(b"".join(line + b"\n" for line in body)).hexdigest()
        footer = json.dumps({"record": "footer", "rows": 2, "digest": f"sha256:{digest}"}, separators=(",", ":"))
        trace.write_bytes(b"\n".join([lines[0], *body, footer.encode()]) + b"\n")
    document = {"format": "detllm.run_config", "version": "1.0", "command": None,
                "config": {"model": "test/model", "backend": "hf", "max_new_tokens": steps},
                "prompts": [{"id": "small", "prompt": "x"}, {"id": "big", "prompt": "y"}]}  # fmt: skip
    (directory / "run_config.json").write_text(json.dumps(document))
    (directory / "env.json").write_text("{}\n")
    determinism = {"format": "detllm.determinism", "version": "1.0", "mode": "best-effort", "complete": True, "unavailable": {}}
    (directory / "determinism_applied.json").write_text(json.dumps(determinism))
    return trace, canonical


def test_a_large_kept_row_is_copied_as_read_and_never_decoded_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detllm.reader import TraceReader

    trace, _ = _run_with_a_large_row(tmp_path / "run")
    decoded: list[int] = []
    decode_row = TraceReader.decode_row

    def recorded(self: TraceReader, line: int, raw: bytes):  # type: ignore[no-untyped-def]
        decoded.append(len(raw))
        return decode_row(self, line, raw)

    monkeypatch.setattr(TraceReader, "decode_row", recorded)
    assert main(["pack", str(tmp_path / "run"), "--all", "--out", str(tmp_path / "pack"), "-q"]) == 0
    assert (tmp_path / "pack" / "trace.jsonl").read_bytes() == trace.read_bytes()
    assert decoded and max(decoded) < 10_000  # the small row only


def test_a_large_row_not_canonical_is_written_canonical_and_a_broken_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, canonical = _run_with_a_large_row(tmp_path / "probe")
    spaced = canonical.replace(b"]],[[", b"]], [[", 1)  # valid JSON, the same row
    trace, _ = _run_with_a_large_row(tmp_path / "spaced", spaced)
    assert main(["pack", str(tmp_path / "spaced"), "--all", "--out", str(tmp_path / "a"), "-q"]) == 0
    assert (tmp_path / "a" / "trace.jsonl").read_bytes().splitlines()[2] == canonical
    # Step 7000's first two entries swapped: out of order, deep in the line.
    step = msgspec.json.decode(canonical)["top_logprobs"][7000]
    old = msgspec.json.encode(step)
    new = msgspec.json.encode([step[1], step[0], *step[2:]])
    assert canonical.count(old) == 1
    trace, _ = _run_with_a_large_row(tmp_path / "broken", canonical.replace(old, new))
    assert main(["pack", str(tmp_path / "broken"), "--all", "--out", str(tmp_path / "b"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.strip().endswith(
        f"{trace}:3: top_logprobs[7000][1]: entries must be sorted by descending logprob, then ascending token id"
    ), err
    assert not (tmp_path / "b").exists()

"""Rendered reports of the fixture traces against their golden files.

Every directory under ``fixtures/diff/`` (synthetic traces) and ``fixtures/recorded/``
(traces recorded from real models) is a case: ``left.jsonl[.gz]`` and
``right.jsonl[.gz]`` are compared with ``diff``; ``runs/`` holds traces to aggregate.
An optional ``options.json`` gives DiffOptions fields. Adding a directory adds a
case. Write or rewrite the goldens (``report.txt``, ``report.md``, ``report.json``,
``report.html`` next to the traces) with ``DETLLM_UPDATE_GOLDENS=1``. A synthetic case without its
goldens fails; a recorded one is skipped until they are written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from detllm import __version__
from detllm.diff import DiffOptions, aggregate_traces, diff_traces
from detllm.diff.model import CLASSIFICATIONS
from detllm.report import render_html, render_json, render_markdown, render_text

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "diff"
RECORDED = ROOT / "fixtures" / "recorded"
UPDATE = os.environ.get("DETLLM_UPDATE_GOLDENS") == "1"


def _trace(case: Path, name: str) -> Path | None:
    for suffix in (".jsonl", ".jsonl.gz"):
        if (case / (name + suffix)).is_file():
            return case / (name + suffix)
    return None


def cases(*roots: Path) -> list[Path]:
    found = []
    for root in roots or (FIXTURES, RECORDED):
        if not root.is_dir():
            continue
        for case in sorted(p for p in root.iterdir() if p.is_dir()):
            if (_trace(case, "left") and _trace(case, "right")) or (case / "runs").is_dir():
                found.append(case)
    return found


def build(case: Path):  # type: ignore[no-untyped-def]
    options_file = case / "options.json"
    options = DiffOptions(**json.loads(options_file.read_text())) if options_file.exists() else DiffOptions()
    relative = case.relative_to(ROOT)
    if (case / "runs").is_dir():
        return aggregate_traces([relative / "runs"], options)
    left, right = _trace(case, "left"), _trace(case, "right")
    assert left is not None and right is not None
    return diff_traces(left.relative_to(ROOT), right.relative_to(ROOT), options)


def _normalise(text: str) -> str:
    # The goldens must not change with every release.
    return text.replace(f'"version": "{__version__}"', '"version": "VERSION"').replace(
        f"<footer>detllm {__version__} ", "<footer>detllm VERSION "
    )


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("case", cases(), ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["txt", "md", "json", "html"])
def test_rendering_matches_golden(case: Path, kind: str) -> None:
    report = build(case)
    rendered = {"txt": render_text, "md": render_markdown, "json": render_json, "html": render_html}[kind](report)
    if kind in ("json", "html"):
        rendered = _normalise(rendered)
    golden = case / f"report.{kind}"
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"no golden {golden}; run with DETLLM_UPDATE_GOLDENS=1 to create it"
    assert rendered == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", cases(), ids=lambda p: p.name)
def test_text_fits_80_columns(case: Path) -> None:
    from detllm._text_util import width

    text = render_text(build(case))
    too_wide = [line for line in text.splitlines() if width(line) > 80]
    assert too_wide == []


def test_cases_named_after_a_classification_have_it() -> None:
    named = [c for c in cases(FIXTURES) if c.name in CLASSIFICATIONS]
    assert len(named) >= 7
    for case in named:
        assert build(case).classification == case.name, case.name


def test_fixtures_cover_every_classification() -> None:
    seen: set[str] = set()
    for case in cases(FIXTURES):
        seen.update(c for c, n in build(case).summary.classifications.items() if n)
    assert seen == set(CLASSIFICATIONS)


RECORDED_VERDICTS = {
    "repeat-identical": ("identical", "run_to_run"),
    "drift-batch-size": ("logprob_drift", "batch_dependence"),
    "flip-batch-size": ("near_tie_flip", "batch_dependence"),
    "sampling-seeds": ("sampling_divergence", "different_setup"),
    "model-mismatch": ("decisive_flip", "different_setup"),
}
"""What the traces recorded from real models must be classified as (see their READMEs)."""


@pytest.mark.parametrize("name", sorted(RECORDED_VERDICTS))
def test_recorded_traces_get_their_verdict(name: str) -> None:
    case = RECORDED / name
    if not case.is_dir():
        pytest.skip(f"{case.relative_to(ROOT)} is not in this checkout")
    report = build(case)
    assert (report.classification, report.setup.attribution.cause) == RECORDED_VERDICTS[name]


def test_fixture_traces_regenerate_byte_for_byte(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    script = tmp_path / "fixtures" / "diff" / "make_fixtures.py"
    script.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "make_fixtures.py", script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(script)], check=True, env=env, cwd=tmp_path)
    made = sorted(p.relative_to(script.parent) for p in script.parent.rglob("*.jsonl*"))
    committed = sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*.jsonl*"))
    assert made == committed
    for name in made:
        assert (script.parent / name).read_bytes() == (FIXTURES / name).read_bytes(), name

"""``detllm.__all__`` and docs/python_api.md list the same public names, and each exists."""

from __future__ import annotations

import re
import subprocess
import sys

import detllm

from .conftest import ROOT

DOC = ROOT / "docs" / "python_api.md"
HEADING = "## What `detllm` exports"


def documented() -> list[str]:
    """The names in the bullets of the export section, up to each bullet's colon."""
    text = DOC.read_text(encoding="utf-8")
    assert HEADING in text, f"{DOC} has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for bullet in re.findall(r"^- (.*?(?:\n  .*?)*)(?=\n- |\n\n|\Z)", section, re.MULTILINE | re.DOTALL):
        names += re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", bullet.split(":", 1)[0])
    return names


def test_the_docs_and_all_list_the_same_names() -> None:
    names = documented()
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert sorted(names) == sorted(detllm.__all__)


def test_every_exported_name_exists() -> None:
    assert [name for name in detllm.__all__ if not hasattr(detllm, name)] == []


def test_the_lazy_names_leave_capture_unimported_until_used() -> None:
    code = (
        "import sys, detllm\n"
        "assert not [m for m in sys.modules if m.startswith('detllm.capture')], 'capture imported'\n"
        "from detllm import CaptureSession, BackendConfig\n"
        "from detllm.capture.runner import CaptureSession as C\n"
        "assert CaptureSession is C\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

"""Each public surface's ``__all__`` and docs/python_api.md list the same names, and each exists.

``detllm`` is the stable API; ``detllm.diff``, ``detllm.diff.model``, ``detllm.diff.inputs``,
``detllm.diff.options`` and ``detllm.report`` are the layers' own entry points, documented the same way.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

DOC = ROOT / "docs" / "python_api.md"
SURFACES = ("detllm", "detllm.diff", "detllm.diff.model", "detllm.diff.inputs", "detllm.diff.options", "detllm.report")


def documented(module: str) -> list[str]:
    """The names in the bullets of ``module``'s export section, up to each bullet's colon."""
    heading = f"## What `{module}` exports"
    text = DOC.read_text(encoding="utf-8")
    assert heading in text, f"{DOC} has no section {heading!r}"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for bullet in re.findall(r"^- (.*?(?:\n  .*?)*)(?=\n- |\n\n|\Z)", section, re.MULTILINE | re.DOTALL):
        names += re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", bullet.split(":", 1)[0])
    return names


@pytest.mark.parametrize("module", SURFACES)
def test_the_docs_and_all_list_the_same_names(module: str) -> None:
    names = documented(module)
    assert names, module
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert sorted(names) == sorted(importlib.import_module(module).__all__)


@pytest.mark.parametrize("module", SURFACES)
def test_every_exported_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    assert [name for name in imported.__all__ if not hasattr(imported, name)] == []


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


def test_the_lazy_report_names_load_their_modules_when_used() -> None:
    code = (
        "import sys, detllm.report as r\n"
        "assert 'detllm.report._pack' not in sys.modules, 'pack imported'\n"
        "from detllm.report import make_pack\n"
        "from detllm.report._pack import make_pack as m\n"
        "assert make_pack is m\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

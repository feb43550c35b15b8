"""Reports: the text, Markdown, JSON and HTML renderings of what the comparison engines found.

``render_text``, ``render_markdown``, ``render_json`` (``write_json``) and ``render_html`` take
every kind of report, chosen by the record's ``kind``: a :class:`~detllm.diff.DiffReport`, an
:class:`~detllm.diff.AggregateReport`, a :class:`~detllm.diff.CheckReport`, a replay comparison
(:class:`~detllm.diff.ReplayDocument`) and a bisect (:class:`~detllm.diff.model.BisectDocument`);
``write_report_dir`` writes them all, ``load_report`` reads a saved ``report.json`` back;
``make_pack`` writes a check's evidence pack. The records themselves live in
:mod:`detllm.diff.model`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._load import load_report
from ._render import (
    atomic_file,
    recorded_command,
    render_html,
    render_json,
    render_markdown,
    render_text,
    write_json,
    write_report_dir,
)
from ._text import DEFAULT_MAX_PROMPTS

if TYPE_CHECKING:
    from ._pack import make_pack

__getattr__ = lazy_names(__name__, {"make_pack": "._pack"})
"""Names whose modules load when first used, so that ``import detllm`` stays light."""


__all__ = [
    "DEFAULT_MAX_PROMPTS",
    "atomic_file",
    "load_report",
    "make_pack",
    "recorded_command",
    "render_html",
    "render_json",
    "render_markdown",
    "render_text",
    "write_json",
    "write_report_dir",
]

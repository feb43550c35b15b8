"""Reports: the text, Markdown, JSON and HTML renderings of what the comparison engines found.

``render_text``, ``render_markdown``, ``render_json`` and ``render_html`` take any kind of report
that :mod:`detllm.diff` returns: a :class:`~detllm.diff.DiffReport`, an
:class:`~detllm.diff.AggregateReport` or a :class:`~detllm.diff.CheckReport`;
``write_report_dir`` writes them all, ``load_report`` reads a saved ``report.json`` back. A
replay comparison and a bisect document have their own text and Markdown renderers;
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
    from ._bisect_render import render_bisect_markdown, render_bisect_text
    from ._pack import make_pack
    from ._replay_render import render_replay_markdown, render_replay_text

__getattr__ = lazy_names(
    __name__,
    {
        "make_pack": "._pack",
        "render_bisect_markdown": "._bisect_render",
        "render_bisect_text": "._bisect_render",
        "render_replay_markdown": "._replay_render",
        "render_replay_text": "._replay_render",
    },
)
"""Names whose modules load when first used, so that ``import detllm`` stays light."""


__all__ = [
    "DEFAULT_MAX_PROMPTS",
    "atomic_file",
    "load_report",
    "make_pack",
    "recorded_command",
    "render_bisect_markdown",
    "render_bisect_text",
    "render_html",
    "render_json",
    "render_markdown",
    "render_replay_markdown",
    "render_replay_text",
    "render_text",
    "write_json",
    "write_report_dir",
]

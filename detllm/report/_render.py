"""Rendering any report as text, Markdown, JSON or HTML, and writing a report directory.

Every report kind (``diff``, ``aggregate``, ``check``, ``replay``, ``bisect``: the ``kind``
its record carries) renders through the same four functions. :data:`RENDERERS` names, per
kind, the functions that write its text and Markdown and how its JSON is written; they are
imported when first used, so that a plain diff loads only its own. HTML is one page built by
:mod:`detllm.report._html` from the sections it lists per kind.
"""

from __future__ import annotations

import importlib
import io
import os
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import IO, Any, Literal, NamedTuple

import msgspec
import orjson

from ..errors import DetllmError
from ..rundir import read_run_config
from ._first_divergence import first_divergences
from ._text import DEFAULT_MAX_PROMPTS

Report = Any
"""A report record of :mod:`detllm.diff.model`, by its ``kind``: a
:class:`~detllm.diff.DiffReport`, an :class:`~detllm.diff.AggregateReport`, a
:class:`~detllm.diff.CheckReport`, a :class:`~detllm.diff.ReplayDocument` or a
:class:`~detllm.diff.model.BisectDocument`."""


class Renderers(NamedTuple):
    """How one report kind renders.

    ``text`` and ``markdown``: ``module:function`` (the module relative to this package),
    each taking the report and ``max_prompts``. ``json``: how its record (which is its own
    JSON form) is written: ``streamed``, the prompts one at a time after the rest (an
    engine's can be more than memory holds), or ``whole``. ``first_divergences``: whether its
    report directory holds ``diffs/first_divergence.json``.
    """

    text: str
    markdown: str
    json: Literal["streamed", "whole"]
    first_divergences: bool


RENDERERS: dict[str, Renderers] = {
    "diff": Renderers("._text:render_diff_text", "._markdown:render_diff_markdown", "streamed", True),
    "aggregate": Renderers("._aggregate_render:render_aggregate_text", "._aggregate_render:render_aggregate_markdown",
                           "streamed", True),
    "check": Renderers("._check_render:render_check_text", "._check_render:render_check_markdown", "streamed", True),
    "replay": Renderers("._replay_render:render_replay_text", "._replay_render:render_replay_markdown", "whole", False),
    "bisect": Renderers("._bisect_render:render_bisect_text", "._bisect_render:render_bisect_markdown", "whole", False),
}
"""The renderers of each report kind, by the ``kind`` its record carries."""


def renderers(report: Report) -> Renderers:
    """The :data:`RENDERERS` entry of ``report``'s kind."""
    return RENDERERS[report.kind]


def _function(name: str) -> Callable[..., str]:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module, __package__), function)  # type: ignore[no-any-return]


def render_text(report: Report, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    """The human report for a terminal; at most ``max_prompts`` prompts in full."""
    return _function(renderers(report).text)(report, max_prompts=max_prompts)


def render_markdown(report: Report, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    """The report in Markdown, for a GitHub issue."""
    return _function(renderers(report).markdown)(report, max_prompts=max_prompts)


def render_html(report: Report, *, command: Sequence[str] | None = None) -> str:
    """The report as one self-contained HTML page; ``command``: what recorded it, when known."""
    renderers(report)  # an unknown kind fails here as it does for the other formats
    from ._html import render_html as html

    return html(report, command=command)


def _indented(value: Any, indent: bytes) -> bytes:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2)
    return b"\n".join(indent + line for line in text.split(b"\n"))


def _write_document(head: dict[str, Any], key: str, items: Any, out: IO[bytes]) -> None:
    """``head`` with the list ``items`` as its last key, streamed item by item."""
    body = orjson.dumps(head, option=orjson.OPT_INDENT_2)
    out.write(body[:-2] + b",\n" + f'  "{key}": ['.encode())
    first = True
    for item in items:
        out.write((b"\n" if first else b",\n") + _indented(item, b"    "))
        first = False
    out.write(b"]\n}\n" if first else b"\n  ]\n}\n")


def _write_encoded(head: dict[str, Any], key: str, items: Any, out: IO[bytes]) -> None:
    """:func:`_write_document` of items already indented as its body's are."""
    body = orjson.dumps(head, option=orjson.OPT_INDENT_2)
    out.write(body[:-2] + b",\n" + f'  "{key}": ['.encode())
    first = True
    chunk: list[bytes] = []
    for item in items:
        chunk.append(b"\n" if first else b",\n")
        chunk.append(item)
        first = False
        if len(chunk) >= 4096:
            out.write(b"".join(chunk))
            chunk.clear()
    out.write(b"".join(chunk))
    out.write(b"]\n}\n" if first else b"\n  ]\n}\n")


def write_json(report: Report, out: IO[bytes]) -> None:
    """Write the versioned JSON report to a binary file: a large kind's prompts one at a
    time, a replay or bisect record (its own document) whole."""
    how = renderers(report).json
    if how == "whole":
        out.write(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
        return
    head = msgspec.to_builtins(msgspec.structs.replace(report, prompts=[]))
    head.pop("prompts")
    indented = getattr(report.prompts, "indented", None)  # a faster path to the same bytes
    if indented is not None:
        _write_encoded(head, "prompts", indented(_indented, b"    "), out)
    else:
        _write_document(head, "prompts", (msgspec.to_builtins(p) for p in report.prompts), out)


def render_json(report: Report) -> str:
    """The versioned JSON report (``formats/report-v1.md``) as text."""
    buffer = io.BytesIO()
    write_json(report, buffer)
    return buffer.getvalue().decode()


def write_report_dir(
    report: Report,
    out_dir: str | os.PathLike[str],
    *,
    max_prompts: int = DEFAULT_MAX_PROMPTS,
    command: Sequence[str] | None = None,
) -> Path:
    """Write ``report.json``, ``report.txt``, ``report.md``, ``report.html`` and, for the
    kinds that compare prompts run against run (diff, aggregate, check),
    ``diffs/first_divergence.json``.

    ``command`` goes into the HTML page's "how to reproduce" box; for a check directory
    it defaults to the ``command`` its ``run_config.json`` records. Each file is written
    under a temporary name and renamed when complete.
    """
    directory = Path(out_dir)
    divergences = renderers(report).first_divergences
    (directory / "diffs" if divergences else directory).mkdir(parents=True, exist_ok=True)
    with atomic_file(directory / "report.json") as out:
        write_json(report, out)
    with atomic_file(directory / "report.txt") as out:
        out.write(render_text(report, max_prompts=max_prompts).encode())
    with atomic_file(directory / "report.md") as out:
        out.write(render_markdown(report, max_prompts=max_prompts).encode())
    if command is None and report.kind == "check":
        command = recorded_command(directory)
    with atomic_file(directory / "report.html") as out:
        out.write(render_html(report, command=command).encode())
    if not divergences:
        return directory
    head, entries = first_divergences(report)
    with atomic_file(directory / "diffs" / "first_divergence.json") as out:
        _write_document(head, "divergences", entries, out)
    return directory


def recorded_command(directory: Path) -> list[str] | None:
    """The ``command`` a check directory's ``run_config.json`` records, if any."""
    try:
        command = read_run_config(directory).command
    except DetllmError:
        return None
    return command or None


class atomic_file:
    """``with atomic_file(path) as out``: write ``<path>.partial``, renamed to ``path`` when
    the block completes and removed when it raises."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")

    def __enter__(self) -> IO[bytes]:
        self.file = open(self.partial, "wb")  # noqa: SIM115 - closed in __exit__
        return self.file

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)

"""Escaping for every output format: one function per format.

Whatever a trace, a report file, a prompt file, a file name or a server supplied is
untrusted. Renderers pass each such string through the function of their format,
and through nothing else:

- :func:`text` for a terminal: control characters (C0, C1, DEL), line and paragraph
  separators, bidi overrides and isolates, zero-width and other invisible format
  characters, unassigned code points and lone surrogates become visible escapes (``\\x1b``, ``\\n``,
  ``\\u202e``); a backslash is doubled so that an escape cannot be forged.
- :func:`markdown` for Markdown text (a paragraph, a heading, a table cell): the
  characters of :func:`text`, then HTML metacharacters as entities and Markdown
  metacharacters behind a backslash, so a string cannot leave its line or cell, nor
  add HTML, headings, links, images, emphasis or table cells.
- :func:`code` for a Markdown code span: the characters of :func:`text`, inside a
  run of backticks longer than any in the string, pipes escaped for tables.
- :func:`code_block` for a fenced Markdown code block (a command to copy): each line
  as :func:`text` shows it, inside a fence longer than any backtick run in it.
- :func:`html` for HTML text and attribute values: the characters of :func:`text`,
  then ``html.escape`` with quotes.

This module imports nothing of detLLM's: every layer may use it.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata

__all__ = ["code", "code_block", "html", "markdown", "text"]

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_INVISIBLE = frozenset(("Cc", "Cf", "Cn", "Cs", "Zl", "Zp"))
"""Categories shown as escapes: controls, format characters (bidi, zero-width,
BOM, tags), code points unassigned in this Python's Unicode (U+E0000 beside the
tags, noncharacters: a newer terminal may draw them as anything, or as nothing),
surrogates, line and paragraph separators."""

_SAFE_ASCII = re.compile(r"[ -\[\]-~]*")
"""Printable ASCII without the backslash: :func:`text` leaves such a string as is."""


def _visible(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    if unicodedata.category(ch) in _INVISIBLE:
        point = ord(ch)
        if point <= 0xFF:
            return f"\\x{point:02x}"
        if point <= 0xFFFF:
            return f"\\u{point:04x}"
        return f"\\U{point:08x}"
    return ch


def text(value: str) -> str:
    """``value`` for a terminal: invisible and control characters as visible escapes."""
    if _SAFE_ASCII.fullmatch(value):
        return value
    return "".join(map(_visible, value))


_MARKDOWN = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#39;",
    "|": "\\|",
}
_MARKDOWN.update({ch: "\\" + ch for ch in "\\`*_[]#~"})
_MARKDOWN_TABLE = str.maketrans(_MARKDOWN)
_BLOCK_START = re.compile(r"^([-+=]|\d+[.)])")
"""What would open a list, a thematic break or a setext underline at a line's start."""


def markdown(value: str) -> str:
    """``value`` as Markdown text that renders as itself and stays on its line and in its cell.

    Only the characters that can open a construct are escaped: ``[`` and ``]`` (links
    and images), emphasis and strikethrough marks, ``#``, backticks, pipes, HTML
    metacharacters, and a list or break marker at the start.
    """
    shown = text(value).translate(_MARKDOWN_TABLE)
    return _BLOCK_START.sub(lambda m: m.group(1)[:-1] + "\\" + m.group(1)[-1], shown)


def code(value: str) -> str:
    """``value`` as a Markdown code span: no backtick run in it can close the span."""
    shown = text(value)
    longest = max((len(run) for run in re.findall("`+", shown)), default=0)
    fence = "`" * (longest + 1)
    if not shown:
        return "` `"
    # CommonMark strips one space from each end of a span that has both: pad to keep them.
    ends = shown[0] + shown[-1]
    padding = " " if "`" in ends or (ends == "  " and shown.strip()) else ""
    return f"{fence}{padding}{shown}{padding}{fence}".replace("|", "\\|")


def code_block(lines: list[str], info: str = "") -> str:
    """``lines`` as a fenced Markdown code block that none of them can close or leave."""
    shown = [text(line) for line in lines]
    longest = max((len(run) for line in shown for run in re.findall("`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence + info, *shown, fence])


def html(value: str) -> str:
    """``value`` for HTML text or a quoted attribute: controls visible, metacharacters as entities."""
    return _html.escape(text(value), quote=True)

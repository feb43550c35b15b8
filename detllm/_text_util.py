"""Showing token texts in a terminal: escapes, display widths, columns."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Protocol

from ._escape import text as escape

__all__ = ["clip", "columns", "escape", "pad", "raw_tokens_text", "token", "tokens_text", "width", "wrap"]


class Token(Protocol):
    """What these helpers read of a report's token (:class:`detllm.diff.model.Token`), named
    here so that the formats layer needs nothing from the layers above it."""

    @property
    def id(self) -> int: ...

    @property
    def text(self) -> str | None: ...


def token(tok: Token | None) -> str:
    """One token: its text in quotes, or ``<id>`` when the trace has no text."""
    if tok is None:
        return "(none)"
    if tok.text is None:
        return f"<{tok.id}>"
    return '"' + escape(tok.text).replace('"', '\\"') + '"'


def tokens_text(tokens: Iterable[Token]) -> str:
    """Tokens run together as text; a token without text shows as ``<id>``."""
    return "".join(escape(t.text) if t.text is not None else f"<{t.id}>" for t in tokens)


def raw_tokens_text(tokens: Iterable[Token]) -> str:
    """:func:`tokens_text` before escaping, for a format that escapes in its own way."""
    return "".join(t.text if t.text is not None else f"<{t.id}>" for t in tokens)


def char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def clip(text: str, columns: int, *, left: bool = False) -> str:
    """``text`` cut to ``columns`` with ``...`` marking the cut (at the start if ``left``)."""
    if width(text) <= columns:
        return text
    if columns <= 3:
        return "." * columns
    budget = columns - 3
    chars = reversed(text) if left else iter(text)
    kept: list[str] = []
    used = 0
    for ch in chars:
        w = char_width(ch)
        if used + w > budget:
            break
        kept.append(ch)
        used += w
    body = "".join(reversed(kept)) if left else "".join(kept)
    return "..." + body if left else body + "..."


def pad(text: str, columns: int) -> str:
    return text + " " * max(0, columns - width(text))


def wrap(text: str, columns: int, lines: int) -> list[str]:
    """``text`` in at most ``lines`` lines of ``columns``; the last ends in ``...`` if cut."""
    out: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        w = char_width(ch)
        if used + w > columns:
            out.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += w
    if current or not out:
        out.append("".join(current))
    if len(out) > lines:
        out = out[:lines]
        out[-1] = clip(out[-1] + "....", columns)
    return out


def columns(left: list[str], right: list[str], column: int, gutter: str = " | ", indent: str = "  ") -> list[str]:
    """Two lists of lines side by side."""
    rows = max(len(left), len(right))
    left = left + [""] * (rows - len(left))
    right = right + [""] * (rows - len(right))
    return [(indent + pad(a, column) + gutter + b).rstrip() for a, b in zip(left, right)]

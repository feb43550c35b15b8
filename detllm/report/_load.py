"""Reading a saved report back."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import orjson

from .._io import open_regular
from .._json_errors import REPEATED_MEMBER, duplicate_member
from ..diff.model import AggregateReport, CheckReport, DiffReport, Status, check_preamble
from ..errors import InputError, TraceFormatError


def load_report(path: str | os.PathLike[str]) -> DiffReport | AggregateReport | CheckReport:
    """Load a ``report.json`` written by ``detllm diff``, ``detllm report`` or ``detllm check``.

    Raises :class:`~detllm.errors.TraceFormatError` (naming the field) when the
    file is not a report of a version this detLLM reads.
    """
    name = os.fspath(path)
    try:
        with open_regular(name, "report") as file:
            data = file.read()
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None
    try:
        document: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TraceFormatError(name, exc.lineno, "-", f"not valid JSON ({exc.msg})") from None
    repeated = duplicate_member(data)
    if repeated is not None:
        raise TraceFormatError(name, 0, repeated, REPEATED_MEMBER)
    kind = check_preamble(document, name, ("diff", "aggregate", "check"))
    if kind == "diff":
        return DiffReport.from_dict(document, path=name)
    if kind == "check":
        return CheckReport.from_dict(document, path=name)
    return AggregateReport.from_dict(document, path=name)


class _SavedResult(msgspec.Struct):
    status: Status


class _SavedDivergence(msgspec.Struct):
    comparison: int
    result: _SavedResult


class _SavedPrompt(msgspec.Struct):
    """What ``detllm pack`` reads of a saved check report's prompt: its id and statuses."""

    prompt_id: str
    divergences: list[_SavedDivergence]


_PROMPT_DECODER = msgspec.json.Decoder(_SavedPrompt)
_PROMPTS_OPEN = b'  "prompts": [\n'
_PROMPTS_EMPTY = b'  "prompts": []\n'
_ITEM_OPEN = b"    {\n"
_ITEM_CLOSE = (b"    }\n", b"    },\n")
_USED_KEYS = (b'"prompt_id"', b'"divergences"', b'"comparison"', b'"result"', b'"status"')


def load_check_statuses(
    path: str | os.PathLike[str],
) -> tuple[DiffReport | AggregateReport | CheckReport, list[tuple[str, frozenset[str]]]]:
    """The saved report at ``path``, and the statuses of each prompt that diverges somewhere
    (``(prompt_id, statuses)``, in the report's order), in memory bounded by those prompts.

    A check report in the layout detLLM writes (``prompts`` last, one item at a time) is
    read as it goes: everything but ``prompts`` is loaded and checked as by
    :func:`load_report`, and of each prompt only its id and its divergences' comparisons
    and statuses are decoded, with those members checked for repeats. A returned check
    report then has no ``prompts``. Any other file, and one whose prompts do not decode,
    is loaded whole by :func:`load_report` (so its errors are that function's)."""
    name = os.fspath(path)
    streamed = _stream_check(name)
    if streamed is not None:
        return streamed
    report = load_report(name)
    statuses = []
    if report.kind == "check":
        for prompt in report.prompts:
            if prompt.divergences:
                statuses.append((prompt.prompt_id, frozenset(d.result.status for d in prompt.divergences)))
    return report, statuses


def _stream_check(name: str) -> tuple[CheckReport, list[tuple[str, frozenset[str]]]] | None:
    """:func:`load_check_statuses` of a file in detLLM's layout; None for anything else."""
    try:
        file = open_regular(name, "report")
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None
    with file:
        head: list[bytes] = []
        for line in file:
            if line in (_PROMPTS_OPEN, _PROMPTS_EMPTY):
                break
            head.append(line)
            if len(head) > 1_000_000:  # not the layout: a report's head is small
                return None
        else:
            return None
        text = b"".join(head).rstrip()
        if not text.endswith(b","):
            return None
        try:
            document: Any = orjson.loads(text[:-1] + b',\n  "prompts": []\n}\n')
        except orjson.JSONDecodeError:
            return None
        if duplicate_member(text[:-1] + b"\n}") is not None or not isinstance(document, dict) or document.get("kind") != "check":
            return None
        report = CheckReport.from_dict(document, path=name)  # its errors are load_report's
        statuses: list[tuple[str, frozenset[str]]] = []
        if line == _PROMPTS_EMPTY:
            return (report, statuses) if _at_end(file) else None
        item: list[bytes] = []
        for line in file:
            if not item:
                if line == _ITEM_OPEN:
                    item.append(line)
                    continue
                if line == b"  ]\n" and _at_end(file):
                    return report, statuses
                return None
            item.append(line)
            if line in _ITEM_CLOSE:
                raw = b"".join(item).rstrip().removesuffix(b",")
                item.clear()
                try:
                    prompt = _PROMPT_DECODER.decode(raw)
                except msgspec.DecodeError:  # ValidationError included
                    return None
                n = len(prompt.divergences)
                # Each used member appears at least this often; a repeat would add one.
                least = (1 + n, 1, n, n, n)
                if any(raw.count(key) > k for key, k in zip(_USED_KEYS, least)) and duplicate_member(raw) is not None:
                    return None
                if prompt.divergences:
                    statuses.append((prompt.prompt_id, frozenset(d.result.status for d in prompt.divergences)))
        return None


def _at_end(file: Any) -> bool:
    """The rest of ``file`` is the closing brace of the document."""
    return file.read(3) in (b"}\n", b"}") and file.read(1) == b""

"""Reading a saved report back."""

from __future__ import annotations

import os
from typing import Any

import orjson

from .._io import open_regular
from .._json_errors import REPEATED_MEMBER, duplicate_member
from ..diff import DiffReport
from ..diff._report import check_preamble
from ..errors import InputError, TraceFormatError
from ._aggregate_model import AggregateReport
from ._check_model import CheckReport


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

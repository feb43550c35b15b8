"""Check trace files against the format, collecting every problem found."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

from ._io import DEFAULT_MAX_LINE_BYTES
from .errors import NewerMinorVersionWarning, TraceFormatError
from .reader import TraceReader

__all__ = ["Finding", "ValidationResult", "validate_trace"]

MAX_FINDINGS = 1000
"""Findings kept per file; a file with more gets one last finding that says so."""


@dataclass(frozen=True)
class Finding:
    """One problem: ``path:line: field: problem``."""

    path: str
    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.problem}"

    @classmethod
    def from_error(cls, error: TraceFormatError) -> Finding:
        return cls(error.path, error.line, error.field, error.problem)


@dataclass
class ValidationResult:
    """What :func:`validate_trace` found in one file."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0
    version: str | None = None
    complete: bool = False

    @property
    def valid(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "valid": self.valid,
            "version": self.version,
            "rows": self.rows,
            "complete": self.complete,
            "findings": [{"line": f.line, "field": f.field, "problem": f.problem} for f in self.findings],
            "warnings": list(self.warnings),
        }


def validate_trace(
    path: str | os.PathLike[str],
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_findings: int = MAX_FINDINGS,
) -> ValidationResult:
    """Validate one trace file and return every problem found (up to ``max_findings``).

    A problem that stops reading (an unreadable header, a corrupt gzip stream) ends
    the scan with that finding. I/O trouble (a missing file) raises
    :class:`~detllm.errors.InputError` instead: it says nothing about the format.
    """
    result = ValidationResult(path=os.fspath(path))
    dropped = 0

    def collect(error: TraceFormatError) -> None:
        nonlocal dropped
        if len(result.findings) < max_findings:
            result.findings.append(Finding.from_error(error))
        else:
            dropped += 1

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NewerMinorVersionWarning)
            reader = TraceReader(path, max_line_bytes=max_line_bytes, _collect=collect)
        with reader:
            result.version = reader.header.version
            result.warnings.extend(reader.warnings)
            for _ in reader:
                pass
            result.rows = reader.rows_read
            result.complete = reader.complete
    except TraceFormatError as error:
        collect(error)
    if dropped:
        last = result.findings[-1]
        result.findings.append(Finding(last.path, last.line, "-", f"{dropped} more findings not shown"))
    return result

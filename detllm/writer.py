"""Streaming trace writer.

Rows go to ``<path>.partial`` as they come; :meth:`TraceWriter.close` writes the
footer, flushes to disk and renames the file to ``<path>``. A run that crashes leaves
the ``.partial`` file: it has no footer, so every reader sees that it is incomplete,
and ``open_trace(path, allow_incomplete=True)`` still gives its complete rows.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ._canonical import ProvedLine, canonical_row, encodes_as, is_canonical, prove_canonical_line
from .trace import Footer, Header, Row, encode, header_problems, row_problems

__all__ = ["PARTIAL_SUFFIX", "TraceWriter", "canonical_row", "is_canonical", "write_trace"]

PARTIAL_SUFFIX = ".partial"


class TraceWriter:
    """Write a trace row by row. Use as a context manager, or call :meth:`close`.

    Rows are canonicalised before encoding (top-k entries sorted by descending
    logprob then token id, entries of logprob -inf dropped as impossible tokens,
    ``token_texts`` sorted by id) and checked against the format's rules: a row that
    breaks them raises ``ValueError`` and is not written. The file is gzip-compressed
    when ``path`` ends in ``.gz``.
    """

    def __init__(self, path: str | os.PathLike[str], header: Header) -> None:
        problems = list(header_problems(header))
        if problems:
            field, problem = problems[0]
            raise ValueError(f"invalid header: {field}: {problem}")
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.header = header
        self.rows_written = 0
        self.footer: Footer | None = None
        """The footer, once :meth:`close` wrote it."""
        self._digest = hashlib.sha256()
        self._ids: set[str] = set()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(self.partial_path, "wb")  # noqa: SIM115 - closed in close()
        self._raw = raw
        self._file: BinaryIO = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if self.path.suffix == ".gz" else raw  # type: ignore[assignment]
        self._file.write(encode(header) + b"\n")

    def write(self, row: Row, raw: bytes | None = None) -> None:
        """Canonicalise, check and append one row.

        ``raw``: the line ``row`` was decoded from (without its newline). When it is
        already ``row``'s canonical encoding it is written as it is, so that a large row
        is not copied again to be canonicalised and encoded."""
        if self._closed:
            raise ValueError("write to a closed TraceWriter")
        line = raw if raw is not None and is_canonical(row) and encodes_as(row, raw) else None
        if line is None:
            row = canonical_row(row)
        for field, problem in row_problems(row, self.header):
            raise ValueError(f"row {row.prompt_id!r}: {field}: {problem}")
        self._append(row.prompt_id, encode(row) if line is None else line)

    def write_line(self, line: ProvedLine) -> bool:
        """Append a row line proved valid and canonical (:meth:`~detllm.reader.TraceReader.prove_line`)
        as it is: a large line is so checked a part at a time, never decoded whole. A line
        proved under another header (one not equal) is proved again under this one. False,
        and nothing written, when that fails: decode the line and :meth:`write` the row."""
        if self._closed:
            raise ValueError("write to a closed TraceWriter")
        if line.header != self.header:
            proved = prove_canonical_line(line.raw, self.header)
            if proved is None:
                return False
        self._append(line.prompt_id, line.raw)
        return True

    def _append(self, prompt_id: str, line: bytes) -> None:
        if prompt_id in self._ids:
            raise ValueError(f"row {prompt_id!r}: prompt_id: duplicate prompt id")
        self._ids.add(prompt_id)
        for part in (line, b"\n"):  # not joined: a copy of a large line
            self._digest.update(part)
            self._file.write(part)
        self.rows_written += 1

    def flush(self) -> None:
        """Push written rows to the file, so that a crash later loses none of them."""
        self._file.flush()
        if self._file is not self._raw:
            self._raw.flush()

    def close(self) -> Path:
        """Write the footer, make the file durable and give it its final name."""
        if self._closed:
            return self.path
        footer = Footer(rows=self.rows_written, digest="sha256:" + self._digest.hexdigest())
        self.footer = footer
        self._file.write(encode(footer) + b"\n")
        self._finish()
        os.replace(self.partial_path, self.path)
        return self.path

    def abandon(self) -> Path:
        """Stop without a footer; the rows written so far stay in the ``.partial`` file."""
        if not self._closed:
            self._finish()
        return self.partial_path

    def _finish(self) -> None:
        self._closed = True
        if self._file is not self._raw:
            self._file.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def write_trace(path: str | os.PathLike[str], header: Header, rows: Iterable[Row]) -> Path:
    """Write a whole trace; returns its path. A failure leaves ``<path>.partial``."""
    with TraceWriter(path, header) as writer:
        for row in rows:
            writer.write(row)
    return writer.path

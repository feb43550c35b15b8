"""Streaming trace writer.

Rows go to ``<path>.partial`` as they come; :meth:`TraceWriter.close` writes the
footer, flushes to disk and renames the file to ``<path>``. A run that crashes leaves
the ``.partial`` file: it has no footer, so every reader sees that it is incomplete,
and ``open_trace(path, allow_incomplete=True)`` still gives its complete rows.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import msgspec

from .trace import Footer, Header, Row, encode, header_problems, row_problems

__all__ = ["PARTIAL_SUFFIX", "TraceWriter", "write_trace"]

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
        line = raw if raw is not None and is_canonical(row) and _encodes_as(row, raw) else None
        if line is None:
            row = canonical_row(row)
        for field, problem in row_problems(row, self.header):
            raise ValueError(f"row {row.prompt_id!r}: {field}: {problem}")
        if row.prompt_id in self._ids:
            raise ValueError(f"row {row.prompt_id!r}: prompt_id: duplicate prompt id")
        self._ids.add(row.prompt_id)
        if line is None:
            line = encode(row)
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


def canonical_row(row: Row) -> Row:
    """Return ``row`` in canonical form, raising ValueError on non-finite values."""
    logprobs = row.logprobs
    if logprobs is not None:
        logprobs = [float(v) for v in logprobs]
        for i, value in enumerate(logprobs):
            if not math.isfinite(value):
                raise ValueError(f"row {row.prompt_id!r}: logprobs[{i}]: {value!r} is not a finite number")
    top = row.top_logprobs
    if top is not None:
        top = [_canonical_step(row.prompt_id, i, step) for i, step in enumerate(top)]
    texts = row.token_texts
    if texts is not None:
        texts = {int(k): texts[k] for k in sorted(texts, key=int)}
    return Row(
        prompt_id=str(row.prompt_id),
        input_token_ids=[int(t) for t in row.input_token_ids],
        token_ids=[int(t) for t in row.token_ids],
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason=row.finish_reason,
        token_texts=texts,
        prompt=row.prompt,
        batch=row.batch,
        ranks=None if row.ranks is None else [int(r) for r in row.ranks],
    )


def is_canonical(row: Row) -> bool:
    """``row`` is what :func:`canonical_row` makes of it, checked without a copy: every
    top-k step sorted by descending logprob then token id, with finite logprobs, and
    ``token_texts`` sorted by id. (A decoded row has the field types already.)"""
    finite = math.isfinite
    for value in row.logprobs or ():
        if type(value) is not float or not finite(value):
            return False
    for step in row.top_logprobs or ():
        previous: tuple[int, float] | None = None
        for entry in step:
            token, value = entry
            if type(token) is not int or type(value) is not float or not finite(value):
                return False
            if previous is not None and (-previous[1], previous[0]) > (-value, token):
                return False
            previous = entry
    texts = row.token_texts
    if texts is not None:
        keys = list(texts)
        if any(type(k) is not int for k in keys) or keys != sorted(keys):
            return False
    return True


_STEPS_AT_ONCE = 4096
_NULL_TOP = b'"top_logprobs":null'


def _encodes_as(row: Row, raw: bytes) -> bool:
    """``encode(row) == raw``, with the top-k steps encoded a few thousand at a time
    (they are most of a large row), so that no second copy of the line is made."""
    top = row.top_logprobs
    if top is None or len(top) <= _STEPS_AT_ONCE:
        return encode(row) == raw
    rest = encode(msgspec.structs.replace(row, top_logprobs=None))
    at = rest.find(_NULL_TOP)
    head, tail = rest[: at + len(_NULL_TOP) - len(b"null")], rest[at + len(_NULL_TOP) :]
    view = memoryview(raw)
    end = len(view) - len(tail)
    if view[: len(head)] != head or view[end:] != tail or view[len(head) : len(head) + 1] != b"[":
        return False
    pos = len(head) + 1
    for start in range(0, len(top), _STEPS_AT_ONCE):
        chunk = msgspec.json.encode(top[start : start + _STEPS_AT_ONCE])
        part = chunk[1:-1] if start == 0 else b"," + chunk[1:-1]
        if view[pos : pos + len(part)] != part:
            return False
        pos += len(part)
    return pos + 1 == end and view[pos:end] == b"]"


def _canonical_step(prompt_id: str, index: int, step: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    entries: list[tuple[int, float]] = []
    for token, value in step:
        value = float(value)
        if value == -math.inf:
            continue  # probability zero: not an alternative
        if not math.isfinite(value):
            raise ValueError(f"row {prompt_id!r}: top_logprobs[{index}]: {value!r} is not a finite number")
        entries.append((int(token), value))
    entries.sort(key=lambda entry: (-entry[1], entry[0]))
    return entries


def write_trace(path: str | os.PathLike[str], header: Header, rows: Iterable[Row]) -> Path:
    """Write a whole trace; returns its path. A failure leaves ``<path>.partial``."""
    with TraceWriter(path, header) as writer:
        for row in rows:
            writer.write(row)
    return writer.path

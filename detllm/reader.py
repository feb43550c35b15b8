"""Streaming trace reader.

Memory does not depend on the number of rows: rows are decoded one at a time. The
same scan serves :func:`open_trace` (stops at the first problem) and
:func:`detllm.validate.validate_trace` (collects every problem it can).
"""

from __future__ import annotations

import hashlib
import operator
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec

from ._canonical import ProvedLine, prove_canonical_line
from ._io import DEFAULT_MAX_LINE_BYTES, LineSource
from ._json_errors import DECODE_ERRORS, REPEATED_MEMBER, duplicate_member, explain
from .errors import IncompleteTraceError, NewerMinorVersionWarning, TraceFormatError, UnsupportedVersionError
from .trace import (
    FOOTER_PREFIX,
    FORMAT,
    ROW_PREFIX,
    SUPPORTED_MAJOR,
    SUPPORTED_MINOR,
    Footer,
    Header,
    Row,
    footer_decoder,
    header_decoder,
    header_problems,
    parse_version,
    preamble_decoder,
    row_decoder,
    row_members_unique,
    row_problems,
    tag_decoder,
)

__all__ = ["TraceReader", "open_trace", "read_header"]

T = TypeVar("T")

_CUT = "\0cut"

_LINE_AND_RAW = operator.itemgetter(0, 1)
"""What :meth:`TraceReader._kind` says of a last line cut too short to name its record."""


class TraceReader:
    """A trace opened for reading: ``header`` at once, rows by iteration.

    Iterating yields :class:`~detllm.trace.Row` objects; :meth:`raw_rows` yields the
    undecoded bytes of each row line instead. When iteration ends, ``footer`` and
    ``complete`` say whether the trace was whole.

    ``allow_incomplete``: a trace without its footer (the writer crashed) yields its
    complete rows instead of raising :class:`~detllm.errors.IncompleteTraceError`.
    ``verify_digest``: compare the footer's digest with the rows read.
    ``check_rows``: apply the format's rules beyond types to every decoded row.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        allow_incomplete: bool = False,
        verify_digest: bool = True,
        check_rows: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        _collect: Callable[[TraceFormatError], None] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.allow_incomplete = allow_incomplete
        self.verify_digest = verify_digest
        self.check_rows = check_rows
        self.footer: Footer | None = None
        self.complete = False
        self.rows_read = 0
        self.warnings: list[str] = []
        self.minor_is_newer = False
        self._collect = _collect
        self._source = LineSource(path, max_line_bytes, tolerate_cut_gzip=allow_incomplete)
        self._lines = iter(self._source)
        self._started = False
        try:
            self.header: Header = self._read_header()
        except BaseException:
            self._source.close()
            raise

    # -- context manager -------------------------------------------------------------

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public iteration ------------------------------------------------------------

    def __iter__(self) -> Iterator[Row]:
        for line, raw, row in self._scan(decode=True):
            assert row is not None
            yield row

    def raw_rows(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(line_number, bytes)`` of each row line, without decoding it.

        Lines in the canonical layout are recognised as rows by their first bytes
        and are not decoded: the caller decides whether it needs their content.
        """
        return map(_LINE_AND_RAW, self._scan(decode=False))

    def decode_row(self, line: int, raw: bytes) -> Row:
        """Decode and check one line obtained from :meth:`raw_rows`."""
        row = self._decode(row_decoder, raw, line)
        if not row_members_unique(raw, row):
            problem = self._repeated(raw, line)
            if problem is not None:
                raise problem
        if self.check_rows:
            for field, problem in row_problems(row, self.header):
                raise TraceFormatError(self.path, line, field, problem)
        return row

    def prove_line(self, raw: bytes) -> ProvedLine | None:
        """The row line ``raw`` (from :meth:`raw_rows`), proved to be one that
        :meth:`decode_row` accepts and in canonical form, with its top-k steps checked a
        part at a time instead of decoded whole (:func:`~detllm._canonical.prove_canonical_line`);
        for :meth:`~detllm.writer.TraceWriter.write_line`. None proves nothing:
        :meth:`decode_row` the line, which names any problem."""
        return prove_canonical_line(raw, self.header) if self.check_rows else None

    # -- internals -------------------------------------------------------------------

    def _fail(self, error: TraceFormatError) -> None:
        if self._collect is None:
            raise error
        self._collect(error)

    def _read_header(self) -> Header:
        try:
            line, raw = next(self._lines)
        except StopIteration:
            raise TraceFormatError(self.path, 1, "-", "empty file: a trace starts with a header line") from None
        if raw is None:
            raise TraceFormatError(self.path, line, "-", f"line is longer than {self._source.max_line_bytes} bytes")
        preamble = self._decode(preamble_decoder, raw, line)
        if preamble.record != "header":
            found = "no record field" if preamble.record is None else f"a {preamble.record!r} record"
            raise TraceFormatError(self.path, line, "record", f"the first line must be the header, found {found}")
        if preamble.format != FORMAT:
            raise TraceFormatError(self.path, line, "format", f"expected {FORMAT!r}, got {preamble.format!r}")
        version = parse_version(preamble.version)
        if version is None:
            raise TraceFormatError(self.path, line, "version", f"expected 'MAJOR.MINOR', got {preamble.version!r}")
        major, minor = version
        if major != SUPPORTED_MAJOR:
            raise UnsupportedVersionError(
                self.path,
                line,
                "version",
                f"major version {major} is not supported (this detLLM reads {SUPPORTED_MAJOR}.x traces)",
            )
        if minor > SUPPORTED_MINOR:
            self.minor_is_newer = True
            message = (
                f"{self.path}: trace version {preamble.version} is newer than "
                f"{SUPPORTED_MAJOR}.{SUPPORTED_MINOR}; fields this reader does not know are ignored"
            )
            self.warnings.append(message)
            warnings.warn(message, NewerMinorVersionWarning, stacklevel=3)
        header = self._decode(header_decoder, raw, line)
        self._check_members(raw, line)
        for field, problem in header_problems(header):
            self._fail(TraceFormatError(self.path, line, field, problem))
        return header

    def _scan(self, *, decode: bool) -> Iterator[tuple[int, bytes, Row | None]]:
        if self._started:
            raise RuntimeError("a TraceReader can be iterated once")
        self._started = True
        digest = hashlib.sha256() if self.verify_digest else None
        seen_ids: set[str] = set()
        last_line = 1
        source = self._source
        for line, raw in self._lines:
            last_line = line
            # The common case first: a complete row line, not to be decoded here.
            if not decode and raw is not None and raw.startswith(ROW_PREFIX) and self.footer is None and source.ended_with_newline:
                if digest is not None:
                    digest.update(raw)
                    digest.update(b"\n")
                self.rows_read += 1
                yield line, raw, None
                continue
            if raw is None:
                limit = self._source.max_line_bytes
                self._fail(TraceFormatError(self.path, line, "-", f"line is longer than {limit} bytes"))
                continue
            if self.footer is not None:
                self._fail(TraceFormatError(self.path, line, "-", "unexpected line after the footer"))
                continue
            # Only the file's last line can lack its newline: a writer cut off mid-line.
            cut = not self._source.ended_with_newline
            kind = self._kind(raw, line, cut)
            if kind == _CUT:  # the last line, cut before it says what it is: not a row
                break
            if digest is not None and kind != "footer":
                digest.update(raw)
                digest.update(b"\n")
            if kind in ("row", None):
                if kind is None:  # undecodable: it takes a row's place in the count
                    self.rows_read += 1
                    continue
                row: Row | None = None
                if decode or cut:
                    try:
                        row = self.decode_row(line, raw)
                    except TraceFormatError as error:
                        if cut and self.allow_incomplete:
                            break
                        self._fail(error)
                        self.rows_read += 1
                        continue
                    if decode:
                        if row.prompt_id in seen_ids:
                            problem = f"duplicate prompt id {row.prompt_id!r}"
                            self._fail(TraceFormatError(self.path, line, "prompt_id", problem))
                        seen_ids.add(row.prompt_id)
                self.rows_read += 1
                yield line, raw, row
            elif kind == "footer":
                try:
                    footer = self._decode(footer_decoder, raw, line)
                except TraceFormatError as error:
                    if not (cut and self.allow_incomplete):
                        self._fail(error)
                    continue
                self._check_members(raw, line)
                self.footer = footer
                self._check_footer(footer, line, digest)
            elif kind == "header":
                self._fail(TraceFormatError(self.path, line, "record", "a second header"))
            elif not self.minor_is_newer:  # a newer minor version's records are skipped
                self._fail(TraceFormatError(self.path, line, "record", f"unknown record type {kind!r}"))
        if self.footer is not None:
            self.complete = True
        elif not self.allow_incomplete:
            self._fail(
                IncompleteTraceError(
                    self.path,
                    last_line + 1,
                    "footer",
                    f"missing: the trace ends after {self.rows_read} rows without its footer "
                    "(the run that wrote it did not finish, or the file was cut)",
                )
            )

    def _kind(self, raw: bytes, line: int, cut: bool) -> str | None:
        if raw.startswith(ROW_PREFIX):
            return "row"
        if raw.startswith(FOOTER_PREFIX):
            return "footer"
        if not raw.strip():
            self._fail(TraceFormatError(self.path, line, "-", "empty line"))
            return None
        try:
            tag = self._decode(tag_decoder, raw, line)
        except TraceFormatError as error:
            if cut and self.allow_incomplete:
                return _CUT
            self._fail(error)
            return None
        if not isinstance(tag.record, str):
            self._fail(TraceFormatError(self.path, line, "record", "missing: every line must have a record field"))
            return None
        return tag.record

    def _check_footer(self, footer: Footer, line: int, digest: Any) -> None:
        if footer.rows != self.rows_read:
            self._fail(
                TraceFormatError(self.path, line, "rows", f"the footer says {footer.rows} rows but the trace has {self.rows_read}")
            )
        if digest is not None:
            actual = "sha256:" + digest.hexdigest()
            if footer.digest != actual:
                self._fail(
                    TraceFormatError(
                        self.path, line, "digest", "does not match the rows: the trace was modified or corrupted"
                    )
                )

    def _repeated(self, raw: bytes, line: int) -> TraceFormatError | None:
        name = duplicate_member(raw)
        if name is None:
            return None
        return TraceFormatError(self.path, line, name, REPEATED_MEMBER)

    def _check_members(self, raw: bytes, line: int) -> None:
        problem = self._repeated(raw, line)
        if problem is not None:
            self._fail(problem)

    def _decode(self, decoder: msgspec.json.Decoder[T], raw: bytes, line: int) -> T:
        try:
            return decoder.decode(raw)
        except DECODE_ERRORS as exc:
            field, problem = explain(exc, raw)
        raise TraceFormatError(self.path, line, field, problem)


def open_trace(path: str | os.PathLike[str], **options: Any) -> TraceReader:
    """Open a trace for streaming. See :class:`TraceReader` for the options."""
    return TraceReader(path, **options)


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read only the header of a trace."""
    with TraceReader(path, verify_digest=False) as reader:
        return reader.header

"""Reading trace files line by line: plain or gzip, with bounded memory.

Compression is recognised by the gzip magic bytes, not by the file name. A line is
never read whole when it is longer than the limit, so a hostile file cannot make
the reader allocate more than ``max_line_bytes``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from .errors import InputError, TraceFormatError

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024
"""Longest line accepted: a row of 32k tokens with top-20 alternatives is about 30 MB."""

_BUFFER = 1024 * 1024


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a trace for reading, decompressing it when it is gzip."""
    try:
        raw = open(path, "rb", buffering=_BUFFER)  # noqa: SIM115 - returned to the caller
    except IsADirectoryError:
        raise InputError(f"{os.fspath(path)}: is a directory, not a trace file") from None
    except OSError as exc:
        raise InputError(f"{os.fspath(path)}: {exc.strerror or exc}") from None
    magic = raw.peek(2)[:2]
    if magic == GZIP_MAGIC:
        # GzipFile reads ahead in small steps: damage at the end of the stream is met
        # near the line it affects, and the rows before it stay readable.
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


class LineSource:
    """The lines of a file as ``(line_number, bytes)``, newline stripped.

    ``ended_with_newline`` tells, after iteration, whether the last line had its
    newline: a trace cut off mid-write usually has not.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        *,
        tolerate_cut_gzip: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.tolerate_cut_gzip = tolerate_cut_gzip
        self.max_line_bytes = max_line_bytes
        self.line = 0
        self.ended_with_newline = True
        self._file = open_binary(path)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LineSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        """Yield each line; ``None`` stands for a line longer than ``max_line_bytes``."""
        readline = self._file.readline
        limit = self.max_line_bytes + 1
        while True:
            try:
                data = readline(limit)
            except EOFError as exc:  # a gzip stream without its end: the writer stopped
                if self.tolerate_cut_gzip:
                    self.ended_with_newline = False
                    return
                raise TraceFormatError(self.path, self.line + 1, "-", f"truncated gzip data ({exc})") from None
            except (gzip.BadGzipFile, zlib.error) as exc:  # damaged gzip stream
                raise TraceFormatError(self.path, self.line + 1, "-", f"corrupt gzip data ({exc})") from None
            except OSError as exc:
                raise InputError(f"{self.path}: {exc.strerror or exc}") from None
            if not data:
                return
            self.line += 1
            if data[-1:] == b"\n":
                yield self.line, data[:-1]
            elif len(data) == limit:
                self._skip_rest_of_line()
                yield self.line, None
            else:
                self.ended_with_newline = False
                yield self.line, data

    def _skip_rest_of_line(self) -> None:
        while True:
            chunk = self._file.readline(_BUFFER)
            if not chunk or chunk[-1:] == b"\n":
                return

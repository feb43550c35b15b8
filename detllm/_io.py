"""Reading trace files line by line: plain or gzip, with bounded memory.

Compression is recognised by the gzip magic bytes, not by the file name. A line is
never read whole when it is longer than the limit, so a hostile file cannot make
the reader allocate more than ``max_line_bytes``.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from .errors import InputError, TraceFormatError, UsageError

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024
"""Longest line accepted: a row of 32k tokens with top-20 alternatives is about 30 MB."""

_BUFFER = 1024 * 1024


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _proc_device() -> int | None:
    try:
        return os.stat("/proc").st_dev
    except OSError:
        return None


def _refusal(status: os.stat_result, what: str) -> str | None:
    if stat.S_ISDIR(status.st_mode):
        return f"is a directory, not a {what} file"
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _KINDS if test(status.st_mode)), "not a file")
        return f"is {kind}, not a regular file: a {what} is read from a file"
    if status.st_size == 0 and status.st_dev == _proc_device():
        # Files under /proc say they are empty and may never end (pagemap) or block (kmsg).
        return f"is a file of /proc, not a regular file: a {what} is read from a file"
    return None


def check_regular(path: str | os.PathLike[str], what: str = "trace") -> None:
    """Refuse, without opening it, a path that is not a regular file (a FIFO would block)."""
    name = os.fspath(path)
    if not name:
        raise UsageError(f"an empty path is not a {what} file")
    try:
        status = os.stat(name)
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None
    refusal = _refusal(status, what)
    if refusal is not None:
        raise InputError(f"{name}: {refusal}")


def open_regular(path: str | os.PathLike[str], what: str = "trace", buffering: int = -1) -> BinaryIO:
    """Open a regular file for reading; anything else is refused with one line.

    Checked before opening, and again on the open file (a path can change between
    the two): opened non-blocking, so that even then a FIFO cannot hang the reader.
    """
    check_regular(path, what)
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None
    refusal = _refusal(os.fstat(fd), what)
    if refusal is not None:
        os.close(fd)
        raise InputError(f"{name}: {refusal}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return open(fd, "rb", buffering=buffering)  # noqa: SIM115 - returned to the caller


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a trace for reading, decompressing it when it is gzip."""
    raw = open_regular(path, "trace", _BUFFER)
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
                data = data[:-1]  # the line with its newline goes now, not at the next line
                yield self.line, data
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

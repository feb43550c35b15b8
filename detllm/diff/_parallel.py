"""Work for worker processes, for large traces: hashing, and analysing differing rows.

Decoding and analysing a pair of differing rows costs far more than reading it, and
hashing a trace for its footer's digest costs as much as reading it. With
``DiffOptions.workers`` above 1, a worker hashes the left trace on its own while the
main process reads and pairs rows, and pairs whose bytes differ go to the workers in
batches; when the workers are busy, the main process analyses a batch itself.
Workers are forked, so they start at once with everything imported; where fork is
not available the comparison stays in one process. Results come back encoded, in
any order: the report puts them in trace order by their keys.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from .._io import open_binary
from ._analysis import Context, compare
from .._json_errors import DECODE_ERRORS
from ._rows import RowProblem, check_prompt_id, decode_row

if TYPE_CHECKING:
    from concurrent.futures import Future

BATCH_BYTES = 2 * 1024 * 1024
"""Bytes of row lines sent to a worker at a time."""

_encoder = msgspec.json.Encoder()


class Item:
    """A pair of differing rows, as sent to a worker.

    A row whose byte offset in its (uncompressed) file is known travels as that
    offset and its length, and the worker reads it from the file itself: that costs
    one copy from the page cache instead of a trip through a pipe.
    """

    __slots__ = (
        "key",
        "left_index",
        "left_line",
        "left_raw",
        "left_offset",
        "left_length",
        "right_index",
        "right_line",
        "right_raw",
        "right_offset",
        "right_length",
    )

    def __init__(
        self,
        key: int,
        left_index: int,
        left_line: int,
        left_raw: bytes | None,
        left_offset: int,
        left_length: int,
        right_index: int,
        right_line: int,
        right_raw: bytes | None,
        right_offset: int,
        right_length: int,
    ) -> None:
        self.key = key
        self.left_index = left_index
        self.left_line = left_line
        self.left_raw = left_raw
        self.left_offset = left_offset
        self.left_length = left_length
        self.right_index = right_index
        self.right_line = right_line
        self.right_raw = right_raw
        self.right_offset = right_offset
        self.right_length = right_length

    def __reduce__(self) -> tuple[type[Item], tuple[object, ...]]:
        left = None if self.left_offset >= 0 else self.left_raw
        right = None if self.right_offset >= 0 else self.right_raw
        return (
            Item,
            (
                self.key,
                self.left_index,
                self.left_line,
                left,
                self.left_offset,
                self.left_length,
                self.right_index,
                self.right_line,
                right,
                self.right_offset,
                self.right_length,
            ),
        )

    def size(self) -> int:
        return self.left_length + self.right_length


class Outcome(NamedTuple):
    """A worker's answer for one pair: the encoded result, or the problem found."""

    key: int
    encoded: bytes | None
    status: str
    classification: str
    divergence: int | None
    problem: tuple[str, str, str] | None  # side, field, problem


def analyse(ctx: Context, batch: list[Item], paths: tuple[str, str] | None = None) -> list[Outcome]:
    out = []
    files: dict[str, int] = {}
    try:
        for item in batch:
            left_raw, right_raw = item.left_raw, item.right_raw
            if left_raw is None or right_raw is None:
                assert paths is not None
                if left_raw is None:
                    left_raw = _read(files, paths[0], item.left_offset, item.left_length)
                if right_raw is None:
                    right_raw = _read(files, paths[1], item.right_offset, item.right_length)
            out.append(_analyse_one(ctx, item, left_raw, right_raw))
    finally:
        for fd in files.values():
            os.close(fd)
    return out


def _read(files: dict[str, int], path: str, offset: int, length: int) -> bytes:
    fd = files.get(path)
    if fd is None:
        fd = files[path] = os.open(path, os.O_RDONLY)
    return os.pread(fd, length, offset)


def _analyse_one(ctx: Context, item: Item, left_raw: bytes, right_raw: bytes) -> Outcome:
    side = "left"
    try:
        left = decode_row(left_raw)
        check_prompt_id(left_raw, left, side)
        side = "right"
        right = decode_row(right_raw)
        check_prompt_id(right_raw, right, side)
        result = compare(ctx, left, right, item.left_index, item.right_index)
    except DECODE_ERRORS as exc:
        return Outcome(item.key, None, "", "", None, (side, "-", str(exc)))
    except RowProblem as problem:
        return Outcome(item.key, None, "", "", None, (problem.side, problem.field, problem.problem))
    index = result.divergence.index if result.divergence is not None else None
    return Outcome(item.key, _encoder.encode(result), result.status, result.classification, index, None)


_worker_context: tuple[Context, tuple[str, str]] | None = None


def _initialise(ctx: Context, paths: tuple[str, str]) -> None:
    global _worker_context
    _worker_context = (ctx, paths)


def _analyse_in_worker(batch: list[Item]) -> list[Outcome]:
    assert _worker_context is not None
    ctx, paths = _worker_context
    return analyse(ctx, batch, paths)


_TAIL = 64 * 1024
"""Bytes held back from the hash until the end, to leave the footer line out."""


def rows_digest(path: str) -> str | None:
    """``sha256:<hex>`` of a trace's row lines: every byte between header and last line.

    Meant for a trace whose reader found its footer on the last line. None when that
    line is longer than the part held back.
    """
    digest = hashlib.sha256()
    chunk = 1024 * 1024
    buffer = bytearray(chunk + _TAIL)
    view = memoryview(buffer)
    held = 0  # bytes at the front of the buffer read but not hashed yet
    with open_binary(path) as f:
        f.readline()  # the header
        while True:
            n = f.readinto(view[held : held + chunk])
            if not n:
                break
            total = held + n
            if total > _TAIL:
                cut = total - _TAIL
                digest.update(view[:cut])
                view[:_TAIL] = view[cut:total]
                held = _TAIL
            else:
                held = total
    tail = bytes(view[:held])
    view.release()
    end = len(tail) - 1 if tail.endswith(b"\n") else len(tail)
    start = tail.rfind(b"\n", 0, end) + 1
    if start == 0 and len(tail) >= _TAIL:
        return None
    digest.update(tail[:start])
    return "sha256:" + digest.hexdigest()


def rows_prefix_digest(path: str, length: int) -> hashlib._Hash:  # type: ignore[name-defined]
    """The digest state after the first ``length`` bytes of a trace's row lines."""
    digest = hashlib.sha256()
    with open_binary(path) as f:
        f.readline()
        while length > 0:
            chunk = f.read(min(length, 1024 * 1024))
            if not chunk:
                break
            digest.update(chunk)
            length -= len(chunk)
    return digest


def can_fork() -> bool:
    # multiprocessing is imported only when a worker is wanted: it is slow to import.
    if sys.platform == "win32":
        return False
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


class PairPool:
    """Analyses pairs in ``workers - 1`` worker processes and in the calling one."""

    def __init__(self, ctx: Context, workers: int, paths: tuple[str, str]) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._ctx = ctx
        self._executor = ProcessPoolExecutor(
            max_workers=workers - 1,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_initialise,
            initargs=(ctx, paths),
        )
        self._pending: deque[tuple[Future[list[Outcome]], list[Item]]] = deque()
        self._in_flight = 4 * (workers - 1)
        self._batch: list[Item] = []
        self._size = 0

    def digest(self, path: str) -> Future[str | None]:
        """Hash a trace's row lines in a worker (see :func:`rows_digest`)."""
        return self._executor.submit(rows_digest, os.fspath(path))

    def add(self, item: Item) -> Iterator[tuple[Outcome, list[Item]]]:
        """Queue a pair; yield the outcomes that are ready, with their batch."""
        self._batch.append(item)
        self._size += item.size()
        if self._size >= BATCH_BYTES:
            yield from self._dispatch()
        while self._pending and self._pending[0][0].done():
            future, batch = self._pending.popleft()
            for outcome in future.result():
                yield outcome, batch

    def finish(self) -> Iterator[tuple[Outcome, list[Item]]]:
        """Yield every outcome still to come."""
        if self._batch:
            yield from self._dispatch(local=True)
        while self._pending:
            future, batch = self._pending.popleft()
            for outcome in future.result():
                yield outcome, batch

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _dispatch(self, *, local: bool = False) -> Iterator[tuple[Outcome, list[Item]]]:
        batch, self._batch, self._size = self._batch, [], 0
        if not local and len(self._pending) < self._in_flight:
            self._pending.append((self._executor.submit(_analyse_in_worker, batch), batch))
            return
        # The workers are busy: this process takes the batch itself.
        for outcome in analyse(self._ctx, batch):
            yield outcome, batch

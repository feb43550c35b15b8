"""A sequence of per-prompt results that does not have to fit in memory.

Results are kept encoded, one after another, in a temporary file that stays in
memory while it is small. Each result's place in that file (an offset and a
length) and its sort key are 24 bytes of index; past :data:`_INDEX_IN_MEMORY`
entries the index moves to a temporary file too, so memory stays bounded at any
number of prompts. Results that come in out of key order (analysed by a worker
while later rows were read) form sorted runs; :meth:`PromptResults.finish` merges
the runs rather than sorting every result: in memory, into an array of positions,
or, for an index on disk, a few runs at a time from file to file.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, overload

import msgspec

from ._model import PromptResult

_IN_MEMORY = 8 * 1024 * 1024
"""Bytes of encoded results kept in memory before they move to a temporary file."""

_FLUSH = 1024 * 1024
"""Encoded results gather in a buffer this large before they are written out."""

_MERGE_RUNS = 4096
"""Sorted runs merged at most in memory; more (traces in very different orders) are sorted as a list."""

_INDEX_IN_MEMORY = 1 << 18
"""Index entries (24 bytes each) held in memory; older ones are in a temporary file."""

_FAN_IN = 64
"""Runs of an index on disk merged in one pass."""

_BLOCK = 4096
"""Index entries read from the file at a time."""

_RECORD = 24
"""Bytes of one index entry on disk: offset, length and key, 8 bytes each."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PromptResult)


class PromptResults(Sequence[PromptResult]):
    """The results of every prompt, in report order."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY)  # noqa: SIM115 - lives with self
        # The index of the latest entries; entries [0, _spilled) are in _index_file.
        self._offsets = array("q")
        self._lengths = array("q")
        self._keys = array("q")
        self._index_file: IO[bytes] | None = None
        self._spilled = 0
        self._last_key: int | None = None
        self._end = 0
        self._sorted = True
        self._runs = array("q", [0])
        """Where each sorted run of keys starts."""
        self._order: array[int] | None = None
        """Once finished out of order, in memory: the position of each result, in key order."""
        self._ordered: IO[bytes] | None = None
        """Once finished out of order, on disk: the index entries in key order."""
        self._block: tuple[int, array[int]] | None = None
        """The index entries last read from a file: the first one's number, and them."""
        self._buffer = bytearray()

    @classmethod
    def of(cls, results: Iterable[PromptResult]) -> PromptResults:
        collected = cls()
        for i, result in enumerate(results):
            collected.append(result, i)
        return collected

    def append(self, result: PromptResult, key: int) -> None:
        """Add a result; ``key`` orders the results once :meth:`finish` is called."""
        self.append_encoded(_encoder.encode(result), key)

    def append_encoded(self, data: bytes, key: int) -> None:
        """Add a result already encoded as JSON."""
        if self._order is not None or self._ordered is not None:
            raise ValueError("results put in order by finish() take no more")
        if self._last_key is not None and key < self._last_key:
            self._sorted = False
            self._runs.append(len(self))
        self._last_key = key
        self._offsets.append(self._end)
        self._lengths.append(len(data))
        self._keys.append(key)
        self._end += len(data)
        self._buffer += data
        if len(self._buffer) >= _FLUSH:
            self._flush()
        if len(self._keys) >= _INDEX_IN_MEMORY:
            self._spill_index()

    def _flush(self) -> None:
        if self._buffer:
            self._file.seek(0, 2)
            self._file.write(self._buffer)
            self._buffer.clear()

    def _spill_index(self) -> None:
        """Move the index entries held in memory to the end of the index file."""
        if not self._keys:
            return
        if self._index_file is None:
            self._index_file = tempfile.TemporaryFile()  # noqa: SIM115 - lives with self
        records = array("q", bytes(_RECORD * len(self._keys)))
        records[0::3], records[1::3], records[2::3] = self._offsets, self._lengths, self._keys
        os.pwrite(self._index_file.fileno(), records, _RECORD * self._spilled)
        self._spilled += len(self._keys)
        self._offsets, self._lengths, self._keys = array("q"), array("q"), array("q")

    def finish(self) -> None:
        """Put the results in key order."""
        self._flush()
        if self._sorted:
            return
        if self._index_file is not None:
            self._spill_index()
            self._ordered = _merge_on_disk(self._index_file, list(self._runs), self._spilled)
            self._index_file.close()
            self._index_file = None
            self._block = None
        else:
            keys = self._keys
            if len(self._runs) <= _MERGE_RUNS:
                ends = [*self._runs[1:], len(keys)]
                runs = [range(start, end) for start, end in zip(self._runs, ends)]
                self._order = array("q", heapq.merge(*runs, key=keys.__getitem__))
            else:
                self._order = array("q", sorted(range(len(keys)), key=keys.__getitem__))
        self._runs = array("q", [0])
        self._sorted = True

    def __len__(self) -> int:
        return self._spilled + len(self._keys)

    @overload
    def __getitem__(self, index: int) -> PromptResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[PromptResult]: ...
    def __getitem__(self, index: int | slice) -> PromptResult | list[PromptResult]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return _decoder.decode(self.encoded(index))

    def encoded(self, index: int) -> bytes:
        """Result ``index`` as compact JSON."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("result index out of range")
        self._flush()
        offset, length = self._place(index)
        self._file.seek(offset)
        return self._file.read(length)

    def _place(self, index: int) -> tuple[int, int]:
        """Offset and length of the ``index``-th result in report order."""
        if self._ordered is not None:
            return self._read_entry(self._ordered, index)
        if self._order is not None:
            index = self._order[index]
        if index >= self._spilled:
            index -= self._spilled
            return self._offsets[index], self._lengths[index]
        assert self._index_file is not None
        return self._read_entry(self._index_file, index)

    def _read_entry(self, file: IO[bytes], index: int) -> tuple[int, int]:
        block = self._block
        if block is None or not 0 <= index - block[0] < len(block[1]) // 3:
            first = index - index % _BLOCK
            records = array("q")
            records.frombytes(os.pread(file.fileno(), _RECORD * _BLOCK, _RECORD * first))
            block = self._block = (first, records)
        at = 3 * (index - block[0])
        return block[1][at], block[1][at + 1]

    def __iter__(self) -> Iterator[PromptResult]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PromptResults):
            return NotImplemented
        return len(self) == len(other) and all(self.encoded(i) == other.encoded(i) for i in range(len(self)))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<PromptResults: {len(self)} prompts>"


def _run_entries(file: IO[bytes], start: int, end: int, block: int) -> Iterator[tuple[int, int, int]]:
    """The entries ``start`` to ``end`` of an index file, as (key, offset, length), read ``block`` at a time."""
    fd = file.fileno()
    while start < end:
        n = min(block, end - start)
        records = array("q")
        records.frombytes(os.pread(fd, _RECORD * n, _RECORD * start))
        for i in range(0, len(records), 3):
            yield records[i + 2], records[i], records[i + 1]
        start += n


def _merge_on_disk(file: IO[bytes], starts: list[int], total: int) -> IO[bytes]:
    """The index file's entries in key order, in a new file: its sorted runs (beginning
    at ``starts``) merged :data:`_FAN_IN` at a time, pass after pass, into longer runs."""
    bounds = [*zip(starts, [*starts[1:], total])]
    source = file
    while True:
        target = tempfile.TemporaryFile()  # noqa: SIM115 - returned, or closed below
        fd = target.fileno()
        written = 0
        merged_bounds = []
        block = max(64, _BLOCK // min(len(bounds), _FAN_IN))
        for g in range(0, len(bounds), _FAN_IN):
            group = bounds[g : g + _FAN_IN]
            begin = written
            out = array("q")
            for key, offset, length in heapq.merge(*(_run_entries(source, s, e, block) for s, e in group)):
                out.extend((offset, length, key))
                if len(out) >= 3 * _BLOCK:
                    os.pwrite(fd, out, _RECORD * written)
                    written += len(out) // 3
                    out = array("q")
            if out:
                os.pwrite(fd, out, _RECORD * written)
                written += len(out) // 3
            merged_bounds.append((begin, written))
        if source is not file:
            source.close()
        if len(merged_bounds) == 1:
            return target
        source, bounds = target, merged_bounds

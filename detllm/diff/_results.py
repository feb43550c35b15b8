"""A sequence of per-prompt results that does not have to fit in memory.

Results are kept encoded, one after another, in a temporary file that stays in
memory while it is small; only an offset, a length and a sort key (8 bytes each) per
result are held, in arrays. Results that come in out of key order (analysed by a
worker while later rows were read) form sorted runs; :meth:`PromptResults.finish`
merges the runs into an array of positions rather than sorting a list of every result.
"""

from __future__ import annotations

import heapq
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import msgspec

from ._model import PromptResult

_IN_MEMORY = 8 * 1024 * 1024
"""Bytes of encoded results kept in memory before they move to a temporary file."""

_FLUSH = 1024 * 1024
"""Encoded results gather in a buffer this large before they are written out."""

_MERGE_RUNS = 4096
"""Sorted runs merged at most; more (traces in very different orders) are sorted as a list."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PromptResult)


class PromptResults(Sequence[PromptResult]):
    """The results of every prompt, in report order."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY)  # noqa: SIM115 - lives with self
        self._offsets = array("q")
        self._lengths = array("q")
        self._keys = array("q")
        self._end = 0
        self._sorted = True
        self._runs = [0]
        """Where each sorted run of keys starts."""
        self._order: array[int] | None = None
        """Once finished out of order: the position of each result, in key order."""
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
        if self._order is not None:
            raise ValueError("results put in order by finish() take no more")
        if self._keys and key < self._keys[-1]:
            self._sorted = False
            self._runs.append(len(self._keys))
        self._offsets.append(self._end)
        self._lengths.append(len(data))
        self._keys.append(key)
        self._end += len(data)
        self._buffer += data
        if len(self._buffer) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._file.seek(0, 2)
            self._file.write(self._buffer)
            self._buffer.clear()

    def finish(self) -> None:
        """Put the results in key order."""
        self._flush()
        if self._sorted:
            return
        keys = self._keys
        if len(self._runs) <= _MERGE_RUNS:
            ends = [*self._runs[1:], len(keys)]
            runs = [range(start, end) for start, end in zip(self._runs, ends)]
            self._order = array("q", heapq.merge(*runs, key=keys.__getitem__))
        else:
            self._order = array("q", sorted(range(len(keys)), key=keys.__getitem__))
        self._runs = [0]
        self._sorted = True

    def __len__(self) -> int:
        return len(self._offsets)

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
        if self._order is not None:
            index = self._order[index]
        self._file.seek(self._offsets[index])
        return self._file.read(self._lengths[index])

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

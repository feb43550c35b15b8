"""The prompt ids a comparison has seen, for the duplicate check, in 24 bytes or less each.

A set of a million ids costs about 90 MB (a string object and a hash-table slot each);
here an id is held as a 96-bit fingerprint (its 64-bit string hash and its CRC-32) in an
open-addressing table of two arrays, kept at most half full. Two different ids share a
fingerprint with a chance of about n**2 / 2**97 (about 1e-17 for a million ids); ``hash``
of a string is seeded anew in each process, so such a coincidence would not repeat.

Past :data:`LIMIT` ids (about 1M) the table stops growing: a comparison logs each side's
rows to a :class:`RowLog` on disk instead and looks for a repeated id there, so memory
stays bounded at any number of prompts.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Iterator
from typing import IO
from zlib import crc32

from ..errors import TraceFormatError

_START = 1 << 12
"""Slots in a new table (a power of two)."""

LIMIT = (1 << 20) - 1
"""Ids a comparison keeps in a :class:`SeenIds` (a table of 2**21 slots, 25 MB: one more
id would double it); from there on the rows go to a :class:`RowLog` on disk."""

PARTITIONS = 64
"""Temporary files of a :class:`RowLog`, per side."""

_LOG_BUFFER = 4 * 1024
"""Numbers a :class:`RowLog` partition gathers (8 bytes each) before they are written."""


class SeenIds:
    """A set of prompt ids that keeps fingerprints, not the strings."""

    __slots__ = ("_keys", "_checks", "_mask", "_size")

    def __init__(self) -> None:
        self._keys = array("q", bytes(8 * _START))
        self._checks = array("I", bytes(4 * _START))
        self._mask = _START - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, pid: str) -> bool:
        key = hash(pid) or 1  # 0 marks an empty slot
        check = crc32(pid.encode())
        keys, checks, mask = self._keys, self._checks, self._mask
        i = key & mask
        while True:
            found = keys[i]
            if not found:
                return False
            if found == key and checks[i] == check:
                return True
            i = (i + 1) & mask

    def add(self, pid: str) -> bool:
        """Add ``pid``; False when it was there already."""
        return self.add_fingerprint(hash(pid) or 1, crc32(pid.encode()))

    def _grow(self) -> None:
        old_keys, old_checks = self._keys, self._checks
        size = 2 * len(old_keys)
        keys = array("q", bytes(8 * size))
        checks = array("I", bytes(4 * size))
        mask = size - 1
        for key, check in zip(old_keys, old_checks):
            if key:
                i = key & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = key
                checks[i] = check
        self._keys, self._checks, self._mask = keys, checks, mask

    def fingerprints(self) -> Iterator[tuple[int, int]]:
        """The fingerprints held, as (hash, crc) pairs."""
        for key, check in zip(self._keys, self._checks):
            if key:
                yield key, check

    def add_fingerprint(self, key: int, check: int) -> bool:
        """Add a fingerprint (a string hash, not 0, and a CRC-32); False when it was there already."""
        keys, checks, mask = self._keys, self._checks, self._mask
        i = key & mask
        while True:
            found = keys[i]
            if not found:
                break
            if found == key and checks[i] == check:
                return False
            i = (i + 1) & mask
        keys[i] = key
        checks[i] = check
        self._size += 1
        if 2 * self._size > mask:
            self._grow()
        return True


def prompt_id_at(path: str, line: int) -> str:
    """The prompt id of the row at ``line`` of a trace (read before, so it can be read)."""
    from ..reader import open_trace
    from ._rows import prompt_id_decoder, prompt_id_of

    with open_trace(path, allow_incomplete=True, verify_digest=False) as reader:
        raw = next(raw for number, raw in reader.raw_rows() if number == line)
    pid = prompt_id_of(raw)
    return pid if pid is not None else prompt_id_decoder.decode(raw).prompt_id


class OneSideIds:
    """The duplicate check of one trace read in order: a :class:`SeenIds` up to
    :data:`LIMIT` ids, then a :class:`RowLog` on disk."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: SeenIds | None = SeenIds()
        self._log: RowLog | None = None

    def add(self, pid: str, row: int, line: int) -> None:
        """Raise the duplicate-id error when ``pid`` came before (with the ids on disk: at the latest by :meth:`check`)."""
        seen = self._seen
        if seen is None:
            assert self._log is not None
            self._log.add("left", pid, row, line)
            return
        if not seen.add(pid):
            raise TraceFormatError(self.path, line, "prompt_id", f"duplicate prompt id {pid!r}")
        if len(seen) >= LIMIT:
            log = self._log = RowLog()
            for key, check in seen.fingerprints():
                log.add_fingerprint("left", key, check)
            self._seen = None

    def check(self) -> None:
        """Raise the error of the first repeated id logged on disk, if any; call it at the
        end and before any other error, which a repeat read earlier goes before."""
        if self._log is None:
            return
        found = self._log.first_repeat()
        self._log.close()
        self._log = None
        if found is not None:
            pid = prompt_id_at(self.path, found[1])
            raise TraceFormatError(self.path, found[1], "prompt_id", f"duplicate prompt id {pid!r}")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


class RowLog:
    """Each side's prompt ids with their rows, on disk, for a duplicate check in bounded
    memory: once a comparison has seen more ids than :class:`SeenIds` should hold, its
    rows are logged here, and :meth:`first_repeat` finds the first row whose prompt id
    its side listed before.

    Entries (hash, crc, row number, line) go to one of :data:`PARTITIONS` temporary files
    by their hash, so that each file's fingerprints fit one :class:`SeenIds`. A row
    number of -1 stands for a row before the log began (those rows repeat no id).
    """

    def __init__(self) -> None:
        self._files: dict[str, list[IO[bytes]]] = {}
        self._buffers: dict[str, list[array[int]]] = {}
        for side in ("left", "right"):
            self._files[side] = [tempfile.TemporaryFile() for _ in range(PARTITIONS)]  # noqa: SIM115 - closed by close()
            self._buffers[side] = [array("q") for _ in range(PARTITIONS)]

    def add(self, side: str, pid: str, row: int, line: int) -> None:
        self.add_fingerprint(side, hash(pid) or 1, crc32(pid.encode()), row, line)

    def add_fingerprint(self, side: str, key: int, check: int, row: int = -1, line: int = -1) -> None:
        partition = (key >> 58) & (PARTITIONS - 1)  # high bits: a SeenIds places by the low ones
        buffer = self._buffers[side][partition]
        buffer.extend((key, check, row, line))
        if len(buffer) >= _LOG_BUFFER:
            self._write(side, partition)

    def _write(self, side: str, partition: int) -> None:
        buffer = self._buffers[side][partition]
        self._files[side][partition].write(buffer.tobytes())
        del buffer[:]

    def first_repeat(self) -> tuple[str, int] | None:
        """The side and line of the first row, in the order a comparison reads rows (row
        by row, left before right), whose prompt id its side had before; None if none."""
        found: tuple[int, int, int] | None = None
        for number, side in enumerate(("left", "right")):
            for partition in range(PARTITIONS):
                self._write(side, partition)
                repeat = _first_repeat_in(self._files[side][partition])
                if repeat is not None and (found is None or (repeat[0], number) < found[:2]):
                    found = (repeat[0], number, repeat[1])
        return None if found is None else (("left", "right")[found[1]], found[2])

    def close(self) -> None:
        for files in self._files.values():
            for file in files:
                file.close()


def _first_repeat_in(file: IO[bytes]) -> tuple[int, int] | None:
    """Row number and line of the first entry whose fingerprint came earlier in ``file``
    (written in row order)."""
    file.flush()
    file.seek(0)
    seen = SeenIds()
    while True:
        data = file.read(32 * 65536)
        if not data:
            return None
        entries = array("q")
        entries.frombytes(data)
        for i in range(0, len(entries), 4):
            if not seen.add_fingerprint(entries[i], entries[i + 1]):
                return entries[i + 2], entries[i + 3]


ID_PARTITIONS = 64
"""Arrays (and temporary files) of an :class:`IdLog`."""

ID_BUFFER = 16 * 1024
"""Hashes an :class:`IdLog` partition holds in memory before they are written (8 bytes each)."""


class IdLog:
    """Prompt ids, one per prompt, checked for a repeat once they are all in.

    Nothing is looked up while ids arrive, which keeps adding one cheap: an id's 64-bit
    string hash is appended to one of :data:`ID_PARTITIONS` arrays (by its low bits),
    and a partition past :data:`ID_BUFFER` hashes is written to its temporary file.
    :meth:`repeats` then reads one partition at a time and finds the hashes held twice.
    Memory: 8 MB at most while adding, and one partition's set while checking.

    A hash held twice is a candidate, which the caller confirms on the strings: two
    different ids share a hash with a chance of about n**2 / 2**65.
    """

    def __init__(self) -> None:
        self.parts = [array("q") for _ in range(ID_PARTITIONS)]
        self._files: list[IO[bytes] | None] = [None] * ID_PARTITIONS

    def add(self, pid: str) -> None:
        key = hash(pid)
        part = self.parts[key & (ID_PARTITIONS - 1)]
        part.append(key)
        if len(part) >= ID_BUFFER:
            self.spill(key & (ID_PARTITIONS - 1))

    def spill(self, number: int) -> None:
        """Write partition ``number``'s hashes to its file."""
        file = self._files[number]
        if file is None:
            file = self._files[number] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        file.write(self.parts[number].tobytes())
        del self.parts[number][:]

    def repeats(self) -> set[int]:
        """The hashes added more than once."""
        found: set[int] = set()
        for number in range(ID_PARTITIONS):
            keys = array("q")
            file = self._files[number]
            if file is not None:
                file.seek(0)
                keys.frombytes(file.read())
                file.seek(0, 2)
            keys.extend(self.parts[number])
            if len(set(keys)) != len(keys):
                once: set[int] = set()
                for key in keys:
                    if key in once:
                        found.add(key)
                    once.add(key)
        return found

    def close(self) -> None:
        for file in self._files:
            if file is not None:
                file.close()

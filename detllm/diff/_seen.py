"""The prompt ids a comparison has seen, for the duplicate check, in 24 bytes or less each.

A set of a million ids costs about 90 MB (a string object and a hash-table slot each);
here an id is held as a 96-bit fingerprint (its 64-bit string hash and its CRC-32) in an
open-addressing table of two arrays, kept at most half full. Two different ids share a
fingerprint with a chance of about n**2 / 2**97 (about 1e-17 for a million ids); ``hash``
of a string is seeded anew in each process, so such a coincidence would not repeat.
"""

from __future__ import annotations

from array import array
from zlib import crc32

_START = 1 << 12
"""Slots in a new table (a power of two)."""


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
        key = hash(pid) or 1
        check = crc32(pid.encode())
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

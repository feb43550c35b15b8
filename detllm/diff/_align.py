"""Pairing the rows of two traces by prompt id, one row per side at a time.

When both traces list their prompts in the same order, each step reads one row
from each side and nothing is buffered. Otherwise rows wait for their match in a
buffer of bounded size; past the budget they wait in a temporary file instead.

Byte-identical lines are matched without decoding; the prompt id is read from the
canonical prefix of a row. The footers' digests are checked here, hashing the rows
once for both sides for as long as the two traces are byte-identical.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING


from .._io import GZIP_MAGIC
from ..errors import TraceFormatError
from ..reader import TraceReader
from ._parallel import rows_prefix_digest
from .._json_errors import DECODE_ERRORS
from ._rows import prompt_id_decoder, prompt_id_of
from ._seen import LIMIT, RowLog, SeenIds, prompt_id_at

if TYPE_CHECKING:
    from concurrent.futures import Future

_NEWLINE = b"\n"


@dataclass(frozen=True)
class Same:
    """Two byte-identical rows."""

    prompt_id: str
    left_index: int
    right_index: int


@dataclass(frozen=True)
class Pair:
    """The two rows of one prompt, whose bytes differ.

    ``left_offset`` and ``right_offset`` are the rows' byte offsets in plain (not
    compressed) trace files, or -1.
    """

    prompt_id: str
    left_index: int
    left_line: int
    left_raw: bytes
    right_index: int
    right_line: int
    right_raw: bytes
    left_offset: int = -1
    right_offset: int = -1


@dataclass(frozen=True)
class Only:
    """A prompt that one side has and the other has not."""

    prompt_id: str
    side: str
    index: int


@dataclass
class _Waiting:
    index: int
    line: int
    raw: bytes | None
    position: int
    spill_offset: int = 0
    length: int = 0


def _first_row_offset(path: str) -> int:
    """Where a plain trace file's rows start (after its header line); -1 for gzip."""
    with open(path, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            return -1
        f.seek(0)
        return len(f.readline())


class _Digests:
    """sha256 of each side's row lines, for the footers' digests.

    While the two traces are byte-identical one ``shared`` digest stands for both,
    so identical traces are hashed once; :meth:`split` copies it when they part.

    With ``left_digest`` (a worker hashing the left trace on its own), this process
    hashes nothing while the traces agree; when they part, it hashes the right
    trace's rows read so far once more from the file, and goes on from there.
    """

    def __init__(self, left_digest: Future[str | None] | None, paths: dict[str, str]) -> None:
        self._left_digest = left_digest
        self._paths = paths
        self._bytes = {"left": 0, "right": 0}
        self._digests = {"shared": hashlib.sha256()} if left_digest is None else {}

    def update(self, stream: str, raw: bytes) -> None:
        if self._left_digest is not None:
            if stream == "shared":
                self._bytes["left"] += len(raw) + 1
                self._bytes["right"] += len(raw) + 1
                return
            self._bytes[stream] += len(raw) + 1
            if stream == "left":
                return
        digest = self._digests[stream]
        digest.update(raw)
        digest.update(_NEWLINE)

    def split(self) -> None:
        if self._left_digest is not None:
            self._digests["right"] = rows_prefix_digest(self._paths["right"], self._bytes["right"])
            return
        shared = self._digests.pop("shared")
        self._digests["left"], self._digests["right"] = shared.copy(), shared

    def hexdigests(self) -> dict[str, str]:
        """``shared`` until a split, then ``left`` and ``right``."""
        digests = {name: "sha256:" + digest.hexdigest() for name, digest in self._digests.items()}
        if self._left_digest is not None:
            try:
                left = self._left_digest.result()
            except Exception:  # noqa: BLE001 - a worker that failed: hash here instead
                left = None
            if left is None:
                left = "sha256:" + rows_prefix_digest(self._paths["left"], self._bytes["left"]).hexdigest()
            digests["left" if "right" in digests else "shared"] = left
        return digests


class Aligner:
    """Iterate over :class:`Same`, :class:`Pair` and :class:`Only` events."""

    def __init__(
        self,
        left: TraceReader,
        right: TraceReader,
        buffer_bytes: int,
        left_digest: Future[str | None] | None = None,
        check_same: Callable[[int, int, bytes], None] | None = None,
    ) -> None:
        self.left = left
        self.check_same = check_same
        """Called with both line numbers and the bytes of each row the traces share byte
        for byte, when their headers' row rules differ (the row may break one of them)."""
        self.right = right
        self.buffer_bytes = buffer_bytes
        self.buffered = 0
        self.spilled = 0
        self.waited = 0
        """Rows that waited for their match because the traces list prompts in other orders."""
        self._spill: IO[bytes] | None = None
        self._spill_end = 0
        self._waiting: dict[str, dict[str, _Waiting]] = {"left": {}, "right": {}}
        self._matched: SeenIds | None = SeenIds()
        """The prompt ids matched (or one-sided), for the duplicate check; None once it
        grew past :data:`LIMIT` and the rows are logged to :attr:`_log` instead."""
        self._log: RowLog | None = None
        self._readers = {"left": left, "right": right}
        # Newer minor versions may hold records the raw scan skips: let the reader hash.
        self._own_digest = not (left.minor_is_newer or right.minor_is_newer)
        if not self._own_digest:
            left.verify_digest = right.verify_digest = True
        else:
            left.verify_digest = right.verify_digest = False
        self._digests = _Digests(left_digest if self._own_digest else None, {"left": left.path, "right": right.path})
        self._shared = True
        # Byte offsets of the rows, where a worker can read them back from the file.
        self._position = {"left": _first_row_offset(left.path), "right": _first_row_offset(right.path)}
        if not self._own_digest:
            self._position = {"left": -1, "right": -1}

    # -- public -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Same | Pair | Only]:
        try:
            yield from self._scan()
        except TraceFormatError:
            self.check_repeats()  # a repeated id the log holds came first
            raise
        finally:
            if self._spill is not None:
                self._spill.close()
            if self._log is not None:
                self._log.close()
                self._log = None

    def check_repeats(self) -> None:
        """Raise the duplicate-id error of the first repeated prompt id read so far, when
        the ids are logged on disk (past :data:`LIMIT`); a caller that fails on a row
        calls it first, so that the error is the one an unbounded check would give."""
        if self._log is None:
            return
        found = self._log.first_repeat()
        if found is None:
            return
        self._log.close()
        self._log = None  # the scan ends with this error
        side, line = found
        path = self._readers[side].path
        raise TraceFormatError(path, line, "prompt_id", f"duplicate prompt id {prompt_id_at(path, line)!r}")

    def _start_log(self) -> RowLog:
        """Move the duplicate check from the table of ids to a log on disk."""
        matched = self._matched
        assert matched is not None
        log = self._log = RowLog()
        for key, check in matched.fingerprints():  # matched: read on both sides
            log.add_fingerprint("left", key, check)
            log.add_fingerprint("right", key, check)
        for side in ("left", "right"):
            for pid in self._waiting[side]:
                log.add(side, pid, -1, -1)
        self._matched = None
        return log

    def _scan(self) -> Iterator[Same | Pair | Only]:
        left_rows = self.left.raw_rows()
        right_rows = self.right.raw_rows()
        li = ri = 0
        shared = self._shared
        update = self._digests.update
        matched = self._matched
        assert matched is not None
        add = matched.add
        log = self._log
        waiting_left = self._waiting["left"]
        waiting_right = self._waiting["right"]
        position = self._position
        l_item = r_item = None
        for l_item in left_rows:
            r_item = next(right_rows, None)
            if r_item is None:
                break
            lline, lraw = l_item
            rline, rraw = r_item
            lpos, rpos = position["left"], position["right"]
            if lpos >= 0:
                position["left"] = lpos + len(lraw) + 1
            if rpos >= 0:
                position["right"] = rpos + len(rraw) + 1
            if shared and lraw == rraw:
                update("shared", lraw)
                pid = self._id("left", lline, lraw)
                if self.check_same is not None:
                    self.check_same(lline, rline, lraw)
                if log is None:
                    if pid in waiting_left or pid in waiting_right or not add(pid):
                        self._duplicate("left" if pid in waiting_left or pid in matched else "right", lline, rline, pid)
                    if len(matched) >= LIMIT:
                        log = self._start_log()
                        matched = SeenIds()  # the full table is let go
                        add = matched.add
                else:
                    log.add("left", pid, li, lline)
                    log.add("right", pid, ri, rline)
                yield Same(pid, li, ri)
            else:
                if shared:
                    self._split()
                    shared = False
                self._hash("left", lraw)
                self._hash("right", rraw)
                lpid = self._id("left", lline, lraw)
                rpid = self._id("right", rline, rraw)
                if lpid == rpid and lpid not in waiting_left and lpid not in waiting_right:
                    if log is None:
                        if not add(lpid):
                            self._duplicate("left", lline, rline, lpid)
                        if len(matched) >= LIMIT:
                            log = self._start_log()
                            matched = SeenIds()  # the full table is let go
                            add = matched.add
                    else:
                        log.add("left", lpid, li, lline)
                        log.add("right", rpid, ri, rline)
                    if lraw == rraw:
                        if self.check_same is not None:
                            self.check_same(lline, rline, lraw)
                        yield Same(lpid, li, ri)
                    else:
                        yield Pair(lpid, li, lline, lraw, ri, rline, rraw, lpos, rpos)
                else:
                    yield from self._arrive("left", lpid, li, lline, lraw, lpos, other_done=False)
                    yield from self._arrive("right", rpid, ri, rline, rraw, rpos, other_done=False)
                    if self._log is not log:  # the table grew past its limit
                        log = self._log
                        matched = SeenIds()
                        add = matched.add
            li += 1
            ri += 1
            l_item = r_item = None
        # One side has ended: the other's remaining rows are matched or one-sided.
        if l_item is not None:
            yield from self._rest("left", l_item, left_rows, li)
        else:
            if r_item is None:
                r_item = next(right_rows, None)
            if r_item is not None:
                yield from self._rest("right", r_item, right_rows, ri)
        self.check_repeats()
        for side in ("left", "right"):
            for pid, waiting in self._waiting[side].items():
                yield Only(pid, side, waiting.index)
            self._waiting[side].clear()
        self._check_digests()

    # -- internals --------------------------------------------------------------------

    def _rest(self, side: str, first: tuple[int, bytes], rows: Iterator[tuple[int, bytes]], index: int) -> Iterator[Same | Pair | Only]:
        if self._shared:
            self._split()
        item: tuple[int, bytes] | None = first
        while item is not None:
            line, raw = item
            position = self._position[side]
            if position >= 0:
                self._position[side] = position + len(raw) + 1
            self._hash(side, raw)
            pid = self._id(side, line, raw)
            yield from self._arrive(side, pid, index, line, raw, position, other_done=True)
            index += 1
            item = next(rows, None)

    def _arrive(
        self, side: str, pid: str, index: int, line: int, raw: bytes, position: int, *, other_done: bool
    ) -> Iterator[Pair | Only]:
        other = "right" if side == "left" else "left"
        matched = self._matched
        if matched is None:
            assert self._log is not None
            self._log.add(side, pid, index, line)
        if (matched is not None and pid in matched) or pid in self._waiting[side]:
            self._duplicate(side, line, line, pid)
        partner = self._waiting[other].pop(pid, None)
        if partner is not None:
            if matched is not None:
                matched.add(pid)
                if len(matched) >= LIMIT:
                    self._start_log()
            partner_raw = self._take(partner)
            if side == "left":
                yield Pair(pid, index, line, raw, partner.index, partner.line, partner_raw, position, partner.position)
            else:
                yield Pair(pid, partner.index, partner.line, partner_raw, index, line, raw, partner.position, position)
        elif other_done:
            if matched is not None:
                matched.add(pid)  # for the duplicate check: it cannot be matched any more
                if len(matched) >= LIMIT:
                    self._start_log()
            yield Only(pid, side, index)
        else:
            self._wait(side, pid, index, line, raw, position)

    def _wait(self, side: str, pid: str, index: int, line: int, raw: bytes, position: int) -> None:
        self.waited += 1
        if self.buffered + len(raw) <= self.buffer_bytes:
            self._waiting[side][pid] = _Waiting(index, line, raw, position)
            self.buffered += len(raw)
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed at the end of the scan
        self._spill.seek(self._spill_end)
        self._spill.write(raw)
        self._waiting[side][pid] = _Waiting(index, line, None, position, self._spill_end, len(raw))
        self._spill_end += len(raw)
        self.spilled += 1

    def _take(self, waiting: _Waiting) -> bytes:
        if waiting.raw is not None:
            self.buffered -= len(waiting.raw)
            return waiting.raw
        assert self._spill is not None
        self._spill.seek(waiting.spill_offset)
        return self._spill.read(waiting.length)

    def _id(self, side: str, line: int, raw: bytes) -> str:
        pid = prompt_id_of(raw)
        if pid is not None:
            return pid
        reader = self._readers[side]
        try:
            return prompt_id_decoder.decode(raw).prompt_id
        except DECODE_ERRORS:
            reader.decode_row(line, raw)  # raises the format error that names the problem
            raise TraceFormatError(reader.path, line, "prompt_id", "cannot be read") from None

    def _duplicate(self, side: str, lline: int, rline: int, pid: str) -> None:
        self.check_repeats()  # with the ids logged, the first repeat may have come earlier
        reader = self._readers[side]
        raise TraceFormatError(reader.path, lline if side == "left" else rline, "prompt_id", f"duplicate prompt id {pid!r}")

    def _split(self) -> None:
        self._digests.split()
        self._shared = False

    def _hash(self, side: str, raw: bytes) -> None:
        self._digests.update(side, raw)

    def _check_digests(self) -> None:
        digests = self._digests.hexdigests()
        if not self._own_digest:
            return
        for side, reader in self._readers.items():
            footer = reader.footer
            if footer is None:
                continue
            if footer.digest != digests.get(side, digests.get("shared")):
                raise TraceFormatError(
                    reader.path,
                    reader.rows_read + 2,
                    "digest",
                    "does not match the rows: the trace was modified or corrupted",
                )

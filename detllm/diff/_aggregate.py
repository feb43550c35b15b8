"""Aggregating many traces of the same prompts: completions, majorities, splits.

The traces are read in step, one row of each at a time (so all of them are open at
once). A prompt at the same position in every trace is settled there: without
decoding when its rows are byte for byte the same, else by comparing each distinct
completion with the majority's (the diff engine does that). Prompts the traces list
at different positions wait, their distinct rows in a temporary file, until the end.
Memory is bounded by the prompts out of step, not by the rows.
"""

from __future__ import annotations

import hashlib
import itertools
import mmap
import os
import struct
import tempfile
import warnings
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, overload

import msgspec
import orjson

from ._model import CLASSIFICATIONS, HeaderDifference, PositionCount, Token
from ._options import DiffOptions
from ._analysis import Context, compare
from ._engine import trace_info
from ._header import attribute, category_of, flatten_header, greedy_exempt, is_unknown_fingerprint, unfingerprinted
from ._locate import locate_trace, traces_in
from .._numbers import count
from .._json_errors import DECODE_ERRORS
from ._rows import RowProblem, SideRow, decode_row, prompt_id_decoder, prompt_id_of
from ._seen import ID_BUFFER, ID_PARTITIONS, IdLog
from ..errors import InputError, NewerMinorVersionWarning, TraceFormatError, UsageError
from ..reader import TraceReader, open_trace
from ..trace import Header, may_break_other_rules, row_rules_key
from ..writer import PARTIAL_SUFFIX
from ._aggregate_model import (
    AggregateReport,
    AggregateSetup,
    AggregateSummary,
    AggregateVerdict,
    Branch,
    FieldVariation,
    PromptAggregate,
    Split,
    ValueRuns,
    Variant,
)
from .._text_util import token as show_token


def expand_paths(paths: Sequence[str | os.PathLike[str]], *, allow_incomplete: bool = False) -> list[str]:
    """Trace files for ``paths``: files as given, every trace directly in a directory."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            found = traces_in(p, allow_incomplete=allow_incomplete)
            if not allow_incomplete:
                partial = next((f for f in traces_in(p, allow_incomplete=True) if f.name.endswith(PARTIAL_SUFFIX)), None)
                if partial is not None:
                    raise InputError(
                        f"{partial}: a trace that did not finish, so {p} is incomplete "
                        "(pass --allow-incomplete to compare the complete rows)"
                    )
            if not found:
                files.append(locate_trace(p, allow_incomplete=allow_incomplete))  # raises the error
            files.extend(str(f) for f in found)
        else:
            files.append(locate_trace(p, allow_incomplete=allow_incomplete))
    return files


_RUN_SHIFT = 40
"""A prompt's place in the report: ``run << 40 | line``, the lowest run that holds it
and its line there (the order of reading run 0, then what run 1 adds, and so on)."""


def _place(run: int, line: int) -> int:
    return run << _RUN_SHIFT | line


@dataclass(slots=True)
class _Stored:
    run: int
    line: int
    offset: int
    length: int
    raw: bytes | None = None
    """The row itself, for a prompt settled while its rows are in hand (not stored)."""


@dataclass(slots=True)
class _LogprobVariant:
    runs: list[int]
    stored: _Stored


@dataclass(slots=True)
class _TokenVariant:
    token_ids: list[int]
    finish_reason: str
    runs: list[int] = field(default_factory=list)
    logprobs: dict[bytes, _LogprobVariant] = field(default_factory=dict)
    first: _Stored | None = None


class _Light(msgspec.Struct):
    prompt_id: str
    token_ids: list[Any]
    finish_reason: str


_light_decoder = msgspec.json.Decoder(_Light)


@dataclass(slots=True)
class _Prompt:
    order: int
    """Its place (:func:`_place`): the lowest (run, line) of its rows so far."""
    variants: dict[bytes, _TokenVariant] = field(default_factory=dict)
    rows: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    runs: set[int] = field(default_factory=set)


class _Aggregation:
    """The traces read in step, one row of each at a time.

    A prompt whose rows sit at the same position in every trace still being read is
    settled there and then: when the rows are byte for byte the same, by its id, number
    of tokens and finish reason alone (nothing is hashed, decoded in full or kept);
    otherwise its rows are compared at once and only the result is kept, on disk. Only
    the prompts that traces list at different positions (or not at all) wait, in
    memory with their distinct rows in a temporary file, until every trace is read.
    """

    def __init__(self, files: list[str], options: DiffOptions) -> None:
        self.files = files
        self.options = options
        self.headers: list[Header] = []
        self.infos = []
        self.readers: list[TraceReader] = []
        self.notes: list[str] = []
        self.waiting: dict[str, _Prompt] = {}
        """Prompts not in step: read at different positions, or missing from a trace."""
        self.ids = IdLog()
        """One id per prompt (settled in step, or waiting), for the duplicate check at the end."""
        self.prompts: AggregatePrompts | None = None
        self.logprobs = True
        self.contexts: dict[tuple[int, int], Context] = {}
        self.rule_runs: list[int] = []
        """One run per distinct set of row rules, when the headers' rules differ: a row
        shared byte for byte is then checked under each (it may break one of them)."""
        self.positions: Counter[int] = Counter()
        self.disagreeing: set[int] = set()
        self.classes: Counter[str] = Counter()
        self.tier1_stable = self.tier2_stable = 0
        self.splits: list[tuple[int, PromptAggregate]] = []
        self.split_count = self.missing_count = 0
        self.store: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115
        self.store_end = 0

    def open(self) -> None:
        """Open every trace and read its header."""
        _enough_files(len(self.files))
        for path in self.files:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NewerMinorVersionWarning)
                reader = open_trace(path, allow_incomplete=self.options.allow_incomplete)
            self.readers.append(reader)
            self.headers.append(reader.header)

    def read_all(self) -> None:
        self.logprobs = all(h.logprobs.semantics != "none" for h in self.headers)
        groups: dict[tuple[object, ...], int] = {}
        for run, header in enumerate(self.headers):
            groups.setdefault(row_rules_key(header), run)
        self.rule_runs = list(groups.values()) if len(groups) > 1 else []
        self.prompts = AggregatePrompts(len(self.files), self.logprobs)
        try:
            self._read()
        except TraceFormatError:
            self._check_ids(finished=False)  # a repeated id read earlier goes first
            raise
        self._check_ids(finished=True)
        for run, (path, reader) in enumerate(zip(self.files, self.readers)):
            self.notes.extend(reader.warnings)
            if not reader.complete:
                self.notes.append(
                    f"Run {run} ({path}) is incomplete (no footer): its {reader.rows_read} complete rows were used."
                )
            self.infos.append(trace_info(path, reader.header, reader.rows_read, reader.complete))

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self.ids.close()
        self.store.close()

    def _read(self) -> None:
        prompts = self.prompts
        assert prompts is not None
        identical = prompts.identical
        waiting = self.waiting
        decode = _light_decoder.decode
        parts, spill, mask = self.ids.parts, self.ids.spill, ID_PARTITIONS - 1
        for rows in itertools.zip_longest(*(reader.raw_rows() for reader in self.readers)):
            if None in rows:
                self._step(rows)
                continue
            line, raw = rows[0]
            for item in rows:
                if item[1] != raw:
                    self._step(rows)
                    break
            else:  # the same bytes in every trace
                if self.rule_runs:
                    self._check_shared(rows, raw)
                try:
                    light = decode(raw)
                except DECODE_ERRORS:
                    self._bad_row(0, line, raw)
                pid = light.prompt_id
                if pid in waiting:
                    self._step(rows)
                    continue
                key = hash(pid)  # IdLog.add, inline
                part = parts[key & mask]
                part.append(key)
                if len(part) >= ID_BUFFER:
                    spill(key & mask)
                identical(pid, light.token_ids, light.finish_reason, line)
                self.classes["identical"] += 1
                self.tier1_stable += 1
                self.tier2_stable += 1

    def _check_shared(self, rows: tuple[tuple[int, bytes] | None, ...], raw: bytes) -> None:
        """A row every trace holds byte for byte, under headers whose row rules differ:
        checked in full under each header whose rules it may break."""
        headers = self.headers
        for run in self.rule_runs:
            if any(may_break_other_rules(raw, headers[run], headers[other]) for other in self.rule_runs if other != run):
                item = rows[run]
                assert item is not None
                self.readers[run].decode_row(item[0], raw)

    def _bad_row(self, run: int, line: int, raw: bytes) -> NoReturn:
        reader = self.readers[run]
        reader.decode_row(line, raw)  # raises the error that names the problem
        raise TraceFormatError(reader.path, line, "prompt_id", "cannot be read")

    def _id(self, run: int, line: int, raw: bytes) -> str:
        pid = prompt_id_of(raw)
        if pid is None:
            try:
                pid = prompt_id_decoder.decode(raw).prompt_id
            except DECODE_ERRORS:
                self._bad_row(run, line, raw)
        return pid

    def _step(self, rows: tuple[tuple[int, bytes] | None, ...]) -> None:
        """One position whose rows are not all the same bytes (or some trace has ended)."""
        present = [(run, item[0], item[1]) for run, item in enumerate(rows) if item is not None]
        ids = [self._id(run, line, raw) for run, line, raw in present]
        pid = ids[0]
        if all(i == pid for i in ids) and pid not in self.waiting:
            # In step: no trace still being read can hold this prompt again, nor can one that ended.
            run, line, _ = present[0]
            self.ids.add(pid)
            prompt = _Prompt(order=_place(run, line))
            for run, line, raw in present:
                self._add_row(prompt, run, line, raw, keep=True)
            self._settle(pid, prompt, in_step=True)
            return
        for (run, line, raw), pid in zip(present, ids):
            self._wait(pid, run, line, raw)

    def _check_ids(self, *, finished: bool) -> None:
        """Raise the duplicate-id error of the first prompt id a trace repeats, if any.

        The ids' hashes are checked first; only when one comes twice are the traces read
        again (as far as they were read), to find the row and to tell a repeated id
        from two ids that share a hash.
        """
        repeats = self.ids.repeats()
        if not repeats:
            return
        found: tuple[int, int, str] | None = None
        for run, path in enumerate(self.files):
            last = self.readers[run].rows_read + 1 if not finished else None
            seen: set[str] = set()
            try:
                with open_trace(path, allow_incomplete=True, verify_digest=False) as reader:
                    for line, raw in reader.raw_rows():
                        if last is not None and line > last:
                            break
                        try:
                            pid = self._id(run, line, raw)
                        except TraceFormatError:
                            continue
                        if hash(pid) not in repeats:
                            continue
                        if pid in seen:
                            if found is None or (line, run) < found[:2]:
                                found = (line, run, pid)
                            break
                        seen.add(pid)
            except TraceFormatError:
                pass  # a damaged line further on: the rows before it were checked
        if found is not None:
            line, run, pid = found
            raise TraceFormatError(self.files[run], line, "prompt_id", f"duplicate prompt id {pid!r}")

    def _wait(self, pid: str, run: int, line: int, raw: bytes) -> None:
        prompt = self.waiting.get(pid)
        if prompt is None:
            self.ids.add(pid)
            prompt = self.waiting[pid] = _Prompt(order=_place(run, line))
        elif run in prompt.runs:
            raise TraceFormatError(self.files[run], line, "prompt_id", f"duplicate prompt id {pid!r}")
        prompt.order = min(prompt.order, _place(run, line))
        self._add_row(prompt, run, line, raw, keep=False)

    def _add_row(self, prompt: _Prompt, run: int, line: int, raw: bytes, *, keep: bool) -> None:
        prompt.runs.add(run)
        digest = hashlib.sha256(raw).digest()
        keys = prompt.rows.get(digest)
        if keys is None:
            keys = prompt.rows[digest] = self._new_row(prompt, run, line, raw, keep)
        elif self.rule_runs:
            self.readers[run].decode_row(line, raw)  # checked under another header's rules
        token_key, logprob_key = keys
        variant = prompt.variants[token_key]
        variant.runs.append(run)
        found = variant.logprobs[logprob_key]
        found.runs.append(run)
        if run < found.stored.run:  # a prompt out of step: the lowest run's row stands for the others
            found.stored = self._stored(run, line, raw, keep)
        if variant.first is None or run < variant.first.run:
            variant.first = found.stored

    def _new_row(self, prompt: _Prompt, run: int, line: int, raw: bytes, keep: bool) -> tuple[bytes, bytes]:
        self.readers[run].decode_row(line, raw)  # every rule of the format, once per distinct row
        row = decode_row(raw)
        token_key = hashlib.sha256(
            msgspec.json.encode([row.input_token_ids, row.token_ids, row.finish_reason])
        ).digest()
        top = b"|".join(row.top_logprobs) if row.top_logprobs is not None else b"null"
        logprob_key = hashlib.sha256(msgspec.json.encode(row.logprobs) + b"|" + top).digest()
        variant = prompt.variants.get(token_key)
        if variant is None:
            variant = prompt.variants[token_key] = _TokenVariant(list(row.token_ids), row.finish_reason)
        if logprob_key not in variant.logprobs:
            variant.logprobs[logprob_key] = _LogprobVariant([], self._stored(run, line, raw, keep))
        return token_key, logprob_key

    def _stored(self, run: int, line: int, raw: bytes, keep: bool) -> _Stored:
        """A distinct row: kept in hand (``keep``) or written to the store."""
        return _Stored(run, line, -1, len(raw), raw) if keep else _Stored(run, line, self._store(raw), len(raw))

    def _store(self, raw: bytes) -> int:
        offset = self.store_end
        self.store.seek(offset)
        self.store.write(raw)
        self.store_end += len(raw)
        return offset

    def _load(self, stored: _Stored) -> Any:
        if stored.raw is not None:
            return decode_row(stored.raw)
        self.store.seek(stored.offset)
        return decode_row(self.store.read(stored.length))

    def _settle(self, pid: str, state: _Prompt, *, in_step: bool) -> None:
        """Compare a prompt's rows, count the result and keep it for the report."""
        assert self.prompts is not None
        result, found = self.prompt(pid, state, len(self.files), self.logprobs)
        self.prompts.keep(state.order, result, in_step=in_step)
        self.positions.update(found)
        self.disagreeing.update(result.missing)
        for variant in result.variants[1:]:
            self.disagreeing.update(variant.runs)
        self.classes[result.classification] += 1
        self.tier1_stable += result.tier1
        self.tier2_stable += bool(result.tier2)
        if result.completions > 1:
            self.split_count += 1
            self.splits.append((state.order, result))
            if len(self.splits) > 3:  # the first three in report order
                self.splits.sort(key=lambda item: item[0])
                del self.splits[3:]
        self.missing_count += bool(result.missing)

    def settle_waiting(self) -> None:
        """Settle the prompts that were not in step, now that every trace is read."""
        waiting = sorted(self.waiting.items(), key=lambda item: item[1].order)
        self.waiting.clear()
        for pid, state in waiting:
            self._settle(pid, state, in_step=False)
        self.store.seek(0)
        self.store.truncate()

    # -- after reading ----------------------------------------------------------------

    def compare(self, reference: _Stored, other: _Stored) -> Any:
        pair = (reference.run, other.run)
        ctx = self.contexts.get(pair)
        if ctx is None:  # one per pair of runs: comparing the headers is not free
            ctx = self.contexts[pair] = Context.of(self.headers[reference.run], self.headers[other.run], self.options)
        left, right = self._load(reference), self._load(other)
        try:
            return compare(ctx, left, right, _row_index(reference), _row_index(other))
        except RowProblem as problem:  # checked when first read; kept for safety
            stored = reference if problem.side == "left" else other
            raise TraceFormatError(self.files[stored.run], stored.line, problem.field, problem.problem) from None

    def prompt(self, pid: str, state: _Prompt, runs: int, logprobs: bool) -> tuple[PromptAggregate, Counter[int]]:
        ordered = sorted(state.variants.values(), key=lambda v: (-len(v.runs), min(v.runs)))
        majority = ordered[0]
        assert majority.first is not None
        positions: Counter[int] = Counter()
        variants: list[Variant] = []
        classes = []
        for index, variant in enumerate(ordered):
            assert variant.first is not None
            comparison = None
            first = None
            if index:
                comparison = self.compare(majority.first, variant.first)
                classes.append(comparison.classification)
                if comparison.divergence is not None:
                    first = comparison.divergence.index
                    positions[first] += len(variant.runs)
            variants.append(
                Variant(
                    index=index,
                    runs=sorted(variant.runs),
                    tokens=len(variant.token_ids),
                    finish_reason=variant.finish_reason,
                    logprob_variants=len(variant.logprobs),
                    first_divergence=first,
                    run=variant.first.run,
                    reference_run=majority.first.run,
                    comparison=comparison,
                )
            )
        groups = self._logprob_groups(majority) if logprobs else None
        missing = sorted(set(range(runs)) - state.runs)
        tier1 = len(ordered) == 1 and not missing
        tier2 = False if not tier1 else (None if groups is None else groups == 1)
        if missing:
            classes.append("unmatched")
        if groups is not None and groups > 1:
            classes.append("logprob_drift")
        classification = next((c for c in CLASSIFICATIONS if c in classes), "identical")
        return (
            PromptAggregate(
                prompt_id=pid,
                runs=len(state.runs),
                missing=missing,
                completions=len(ordered),
                majority_runs=len(majority.runs),
                logprob_groups=groups,
                classification=classification,
                tier1=tier1,
                tier2=tier2,
                split=self._split(ordered) if len(ordered) > 1 else None,
                variants=variants,
            ),
            positions,
        )

    def _logprob_groups(self, variant: _TokenVariant) -> int:
        """Distinct logprob vectors among the majority's runs (within ``atol``)."""
        lps = sorted(variant.logprobs.values(), key=lambda v: (-len(v.runs), min(v.runs)))
        if len(lps) == 1 or self.options.atol == 0:
            return len(lps)
        groups: list[_LogprobVariant] = []
        for candidate in lps:
            if not any(self.compare(g.stored, candidate.stored).status == "identical" for g in groups):
                groups.append(candidate)
        return len(groups)

    def _split(self, ordered: list[_TokenVariant]) -> Split:
        sequences = [v.token_ids for v in ordered]
        shortest = min(len(s) for s in sequences)
        index = next((i for i in range(shortest) if len({s[i] for s in sequences}) > 1), shortest)
        branches: dict[int | None, list[int]] = {}
        for number, sequence in enumerate(sequences):
            branches.setdefault(sequence[index] if index < len(sequence) else None, []).append(number)
        reference = self._load(ordered[0].first)  # type: ignore[arg-type]
        header = self.headers[ordered[0].first.run]  # type: ignore[union-attr]
        side = SideRow(reference, "left", header)
        start = max(0, index - self.options.context_tokens)
        firsts: dict[int | None, Any] = {}
        for tok, numbers in branches.items():
            if tok is not None:
                stored = ordered[numbers[0]].first
                assert stored is not None
                firsts[tok] = SideRow(self._load(stored), "left", self.headers[stored.run]).text(tok)
        side.texts(reference.token_ids[start:index])
        result = [
            Branch(
                token=None if tok is None else Token(id=tok, text=firsts[tok]),
                runs=sum(len(ordered[n].runs) for n in numbers),
                variants=numbers,
            )
            for tok, numbers in branches.items()
        ]
        result.sort(key=lambda b: (-b.runs, b.variants[0]))
        return Split(
            index=index,
            context=[Token(id=t, text=side.text(t)) for t in reference.token_ids[start:index]],
            branches=result,
            text=split_text(index, result),
        )


class AggregatePrompts(Sequence[PromptAggregate]):
    """Every prompt's aggregate, in report order, in a temporary file, not in memory.

    A prompt whose rows are the same byte for byte in every run is held as its id,
    number of tokens and finish reason, and rebuilt when asked for; the others are
    held encoded. In memory: two 8-byte numbers per prompt while the traces are read,
    one after.
    """

    _IDENTICAL = struct.Struct("<BqHI")  # kind 0, tokens, finish reason, id length; then the id
    _KEPT = struct.Struct("<BI")  # kind 1, length; then the encoded aggregate

    def __init__(self, runs: int, logprobs: bool) -> None:
        self._runs = runs
        self._logprobs = logprobs
        self._finishes: list[str] = []
        self._finish_numbers: dict[str, int] = {}
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives with self
        self._buffer = bytearray()
        self._end = 0
        self._offsets = array("q")
        """Where each prompt's record starts, in the order settled (in step), then in report order."""
        self._places = array("q")
        """The in-step prompts' places, for merging with the ones settled at the end."""
        self._late: list[tuple[int, int]] = []
        self._data: Any = b""

    # -- written while the traces are read ------------------------------------------------

    def identical(self, pid: str, tokens: list[Any], finish: str, line: int) -> None:
        """A prompt whose row is the same in every run, at ``line`` of each."""
        number = self._finish_numbers.get(finish)
        if number is None:
            number = self._finish_numbers[finish] = len(self._finishes)
            self._finishes.append(finish)
        encoded = pid.encode()
        self._offsets.append(self._end + len(self._buffer))
        self._places.append(line)  # run 0: _place(0, line)
        self._buffer += self._IDENTICAL.pack(0, len(tokens), number, len(encoded))
        self._buffer += encoded
        if len(self._buffer) >= 1 << 20:
            self._flush()

    def keep(self, place: int, result: PromptAggregate, *, in_step: bool) -> None:
        """A prompt's aggregate: settled in step (in report order) or at the end (any order)."""
        data = _encoder.encode(result)
        offset = self._end + len(self._buffer)
        if in_step:
            self._offsets.append(offset)
            self._places.append(place)
        else:
            self._late.append((place, offset))
        self._buffer += self._KEPT.pack(1, len(data))
        self._buffer += data
        if len(self._buffer) >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        self._file.write(self._buffer)
        self._end += len(self._buffer)
        self._buffer.clear()

    def finish(self) -> None:
        """Put the prompts settled at the end in their places; from here on, read only."""
        self._flush()
        self._file.flush()
        if self._late:
            self._late.sort()
            merged = array("q")
            late = iter(self._late)
            place, offset = next(late, (None, 0))
            for own, start in zip(self._places, self._offsets):
                while place is not None and place < own:
                    merged.append(offset)
                    place, offset = next(late, (None, 0))
                merged.append(start)
            while place is not None:
                merged.append(offset)
                place, offset = next(late, (None, 0))
            self._offsets = merged
            self._late = []
        self._places = array("q")
        if self._end:
            self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    # -- read -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> PromptAggregate: ...
    @overload
    def __getitem__(self, index: slice) -> list[PromptAggregate]: ...
    def __getitem__(self, index: int | slice) -> PromptAggregate | list[PromptAggregate]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("prompt index out of range")
        return self._record(self._offsets[index], None)  # type: ignore[return-value]

    def _record(self, offset: int, identical: Callable[[str, int, str], Any] | None) -> Any:
        data = self._data
        if data[offset] == 1:
            _, length = self._KEPT.unpack_from(data, offset)
            start = offset + self._KEPT.size
            return _decoder.decode(data[start : start + length])
        _, tokens, finish, length = self._IDENTICAL.unpack_from(data, offset)
        start = offset + self._IDENTICAL.size
        pid = bytes(data[start : start + length]).decode()
        return (identical or self._identical)(pid, tokens, self._finishes[finish])

    def _identical(self, pid: str, tokens: int, finish: str) -> PromptAggregate:
        runs, logprobs = self._runs, self._logprobs
        variant = Variant(
            index=0,
            runs=list(range(runs)),
            tokens=tokens,
            finish_reason=finish,
            logprob_variants=1,
            first_divergence=None,
            run=0,
            reference_run=0,
            comparison=None,
        )
        return PromptAggregate(
            prompt_id=pid,
            runs=runs,
            missing=[],
            completions=1,
            majority_runs=runs,
            logprob_groups=1 if logprobs else None,
            classification="identical",
            tier1=True,
            tier2=True if logprobs else None,
            split=None,
            variants=[variant],
        )

    def __iter__(self) -> Iterator[PromptAggregate]:
        for offset in self._released(self._offsets):
            yield self._record(offset, None)

    def unlike(self) -> Iterator[tuple[int, PromptAggregate]]:
        """The prompts whose rows are not the same in every run, with their index; the
        others are skipped without being rebuilt."""
        data = self._data
        for index, offset in enumerate(self._released(self._offsets)):
            if data[offset] == 1:
                yield index, self._record(offset, None)

    def ids(self) -> Iterator[tuple[int, str]]:
        """Each prompt's id, with its index."""
        for index, offset in enumerate(self._released(self._offsets)):
            yield index, self._record(offset, _id_only) if self._data[offset] == 0 else self._record(offset, None).prompt_id

    def indented(self, indent: Callable[[Any, bytes], bytes], prefix: bytes) -> Iterator[bytes]:
        """Each prompt as ``indent(msgspec.to_builtins(prompt), prefix)`` would write it.

        The prompts that are the same in every run differ only in their id, number of
        tokens and finish reason: they are written from one template.
        """
        if not self._offsets:
            return
        pid, tokens, finish = "\x00id", 7_390_421_983, "\x00finish"
        template = indent(msgspec.to_builtins(self._identical(pid, tokens, finish)), prefix)
        head, rest = template.split(orjson.dumps(pid), 1)
        middle, rest = rest.split(str(tokens).encode(), 1)
        middle2, tail = rest.split(orjson.dumps(finish), 1)
        finishes = [orjson.dumps(f) for f in self._finishes]
        dumps, join, unpack, size = orjson.dumps, b"".join, self._IDENTICAL.unpack_from, self._IDENTICAL.size
        data = self._data
        for offset in self._released(self._offsets):
            if data[offset] == 1:
                yield indent(msgspec.to_builtins(self._record(offset, None)), prefix)
                continue
            _, tokens, finish, length = unpack(data, offset)
            start = offset + size
            pid = data[start : start + length].decode()
            yield join((head, dumps(pid), middle, b"%d" % tokens, middle2, finishes[finish], tail))

    def _released(self, offsets: array[int]) -> Iterator[int]:
        """``offsets``, letting the pages of the records passed go from memory as a long
        read goes on (the file stays; a page read again comes back from it)."""
        data = self._data
        release = getattr(data, "madvise", None) if hasattr(mmap, "MADV_DONTNEED") else None
        low = 0
        for offset in offsets:
            yield offset
            if release is not None and offset - low >= _RELEASE_STEP:
                high = offset - offset % mmap.PAGESIZE
                release(mmap.MADV_DONTNEED, low, high - low)
                low = high

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<AggregatePrompts: {len(self)} prompts>"


_RELEASE_STEP = 16 * 1024 * 1024
"""Bytes of records read before their pages are let go (:meth:`AggregatePrompts._released`)."""


def _id_only(pid: str, tokens: int, finish: str) -> str:
    return pid


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PromptAggregate)


def _row_index(stored: _Stored) -> int:
    return stored.line - 2  # line 1 is the header


def split_text(index: int, branches: list[Branch]) -> str:
    """``identical for 102 tokens, then 992 runs say " X" and 8 say " Y"``."""
    parts = []
    for number, branch in enumerate(branches):
        runs = count(branch.runs, "run") if number == 0 else str(branch.runs)
        action = "stop" if branch.token is None else f"say {show_token(branch.token)}"
        if branch.token is None and branch.runs == 1 and number == 0:
            action = "stops"
        elif branch.token is not None and branch.runs == 1 and number == 0:
            action = f"says {show_token(branch.token)}"
        parts.append(f"{runs} {action}")
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return f"identical for {count(index, 'token')}, then {listed}"


def aggregate_traces(paths: Sequence[str | os.PathLike[str]], options: DiffOptions | None = None) -> AggregateReport:
    """Aggregate traces of the same prompts (repeats, batch sweeps).

    ``paths`` are trace files or directories (every trace directly inside). For
    each prompt: its distinct completions, how many runs agree with the majority,
    where completions split and, for each minority completion, its comparison with
    the majority. Needs at least two traces.
    """
    options = options or DiffOptions()
    files = expand_paths(paths, allow_incomplete=options.allow_incomplete)
    if len(files) < 2:
        raise UsageError(f"aggregating needs at least two traces, got {len(files)}")
    work = _Aggregation(files, options)
    try:
        work.open()
        if options.tier == 2:
            for path, header in zip(files, work.headers):
                if header.logprobs.semantics == "none":
                    raise UsageError(
                        f"{path}: records no logprobs (logprobs.semantics is 'none'), so Tier 2 cannot be judged; "
                        "use --tier 1"
                    )
        work.read_all()
        return _report(work)
    finally:
        work.close()


def _setup(headers: list[Header]) -> AggregateSetup:
    flat = [flatten_header(h) for h in headers]
    fields = list(dict.fromkeys(k for f in flat for k in f))
    greedy = all(not h.decoding.do_sample for h in headers)
    varying = []
    differences = []
    missing = object()
    for name in fields:
        values: dict[str, tuple[object, list[int]]] = {}
        for run, f in enumerate(flat):
            value = f.get(name, missing)
            key = msgspec.json.encode(None if value is missing else value).decode() + ("?" if value is missing else "")
            values.setdefault(key, (None if value is missing else value, []))[1].append(run)
        if len(values) < 2:
            continue
        category = category_of(name)
        if greedy_exempt(name, greedy) is not None:
            category = "ignored"
        elif is_unknown_fingerprint(name, [v for v, _ in values.values()]):
            category = "recording"
        varying.append(
            FieldVariation(field=name, category=category, values=[ValueRuns(value=v, runs=r) for v, r in values.values()])  # type: ignore[arg-type]
        )
        first, second = list(values.values())[:2]
        differences.append(HeaderDifference(field=name, left=first[0], right=second[0], absent=None, category=category))  # type: ignore[arg-type]
    attribution = attribute(differences, [h.batch.size for h in headers])
    caveat = unfingerprinted(headers)
    if caveat:
        attribution = msgspec.structs.replace(attribution, text=attribution.text + caveat)
    return AggregateSetup(varying=varying, attribution=attribution)


def _report(work: _Aggregation) -> AggregateReport:
    runs = len(work.files)
    work.settle_waiting()
    prompts = work.prompts
    assert prompts is not None
    prompts.finish()
    classes = work.classes
    logprobs = work.logprobs
    tier1 = work.tier1_stable == len(prompts)
    tier2: bool | None = False if not tier1 else (None if not logprobs else work.tier2_stable == len(prompts))
    summary = AggregateSummary(
        runs=runs,
        prompts=len(prompts),
        tier1_stable=work.tier1_stable,
        tier2_stable=work.tier2_stable if logprobs else None,
        runs_agreeing=runs - len(work.disagreeing),
        classifications={c: classes[c] for c in CLASSIFICATIONS},
        divergence_positions=[PositionCount(index=i, count=n) for i, n in sorted(work.positions.items())],
    )
    overall = next((c for c in CLASSIFICATIONS if classes[c]), "identical")
    splits = [result for _, result in sorted(work.splits, key=lambda item: item[0])]
    text = _verdict_text(summary, splits, work.split_count, work.missing_count, tier1, tier2)
    return AggregateReport.of(
        work.options,
        runs=work.infos,
        setup=_setup(work.headers),
        verdict=AggregateVerdict(classification=overall, tier1=tier1, tier2=tier2, text=text),
        summary=summary,
        prompts=prompts,
        notes=list(work.notes),
    )


def _enough_files(traces: int) -> None:
    """Allow this process the open files that reading ``traces`` traces in step needs."""
    try:
        import resource
    except ImportError:  # not on this platform: the default has to do
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = traces + ID_PARTITIONS + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise UsageError(
                f"aggregating {traces} traces reads them all at once, but this process may open only {hard} files "
                "(raise the limit with ulimit -n, or aggregate fewer traces)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _verdict_text(
    summary: AggregateSummary, split: list[PromptAggregate], splits: int, missing: int, tier1: bool, tier2: bool | None
) -> str:
    """``split``: the first three prompts that split, of ``splits``; ``missing``: prompts missing from some runs."""
    parts = [f"Across {count(summary.runs, 'run')} of {count(summary.prompts, 'prompt')}:"]
    stable = summary.tier1_stable
    parts.append(f"{stable} of {summary.prompts} give one completion in every run.")
    if splits:
        shown = "; ".join(f"{p.prompt_id}: {p.split.text}" for p in split[:3] if p.split is not None)
        more = f"; and {splits - 3} more" if splits > 3 else ""
        parts.append(f"{count(splits, 'prompt')} {'splits' if splits == 1 else 'split'} ({shown}{more}).")
    if missing:
        parts.append(f"{count(missing, 'prompt')} {'is' if missing == 1 else 'are'} missing from some runs.")
    parts.append(f"{summary.runs_agreeing} of {summary.runs} runs agree with the majority on every prompt.")
    t2 = "cannot be judged" if tier2 is None else ("holds" if tier2 else "fails")
    parts.append(f"Tier 1 {'holds' if tier1 else 'fails'}; Tier 2 {t2}.")
    return " ".join(parts)

"""Aggregating many traces of the same prompts: completions, majorities, splits.

Traces are read one after another, so any number of them can be aggregated with a
handful of open files. Each distinct row is decoded once; one representative row of
each distinct completion waits in a temporary file until the majority is known,
and is then compared with the majority's representative by the diff engine.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, overload

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
from ..errors import InputError, NewerMinorVersionWarning, TraceFormatError, UsageError
from ..reader import TraceReader, open_trace
from ..trace import Header
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


@dataclass(slots=True)
class _Stored:
    run: int
    line: int
    offset: int
    length: int


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
    token_ids: list[Any]
    finish_reason: str


_light_decoder = msgspec.json.Decoder(_Light)


class _Compact:
    """One small record per prompt whose rows are byte for byte the same in the
    consecutive runs ``first_run`` to ``first_run + count - 1`` (``count`` -1: the
    prompt has full bookkeeping instead)."""

    def __init__(self) -> None:
        self.digests = bytearray()
        self.first_run = array("i")
        self.count = array("i")
        self.line = array("q")
        self.offset = array("q")
        self.length = array("q")
        self.tokens = array("q")
        self.finish = array("i")

    def add(self, run: int, line: int, digest: bytes, offset: int, length: int, tokens: int, finish: int) -> int:
        number = len(self.count)
        self.digests += digest
        self.first_run.append(run)
        self.count.append(1)
        self.line.append(line)
        self.offset.append(offset)
        self.length.append(length)
        self.tokens.append(tokens)
        self.finish.append(finish)
        return number

    def digest(self, number: int) -> memoryview:
        return memoryview(self.digests)[number * 16 : number * 16 + 16]


@dataclass(slots=True)
class _Prompt:
    order: int
    variants: dict[bytes, _TokenVariant] = field(default_factory=dict)
    rows: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    runs: set[int] = field(default_factory=set)


class _Aggregation:
    def __init__(self, files: list[str], options: DiffOptions) -> None:
        self.files = files
        self.options = options
        self.headers: list[Header] = []
        self.infos = []
        self.index_of: dict[str, int] = {}
        self.order: list[str] = []
        self.compact = _Compact()
        self.promoted: dict[int, _Prompt] = {}
        self.finishes: dict[str, int] = {}
        self.readers: list[TraceReader] = []
        self.notes: list[str] = []
        self.store: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115
        self.store_end = 0

    def read_all(self) -> None:
        for run, path in enumerate(self.files):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NewerMinorVersionWarning)
                reader = open_trace(path, allow_incomplete=self.options.allow_incomplete)
            with reader:
                self.readers.append(reader)
                self.headers.append(reader.header)
                self._read(run, reader)
                self.notes.extend(reader.warnings)
                if not reader.complete:
                    self.notes.append(
                        f"Run {run} ({path}) is incomplete (no footer): its {reader.rows_read} complete rows were used."
                    )
                self.infos.append(trace_info(path, reader.header, reader.rows_read, reader.complete))

    def _read(self, run: int, reader: TraceReader) -> None:
        index_of, compact = self.index_of, self.compact
        first_run, counts, digests = compact.first_run, compact.count, compact.digests
        sha256 = hashlib.sha256
        for line, raw in reader.raw_rows():
            pid = prompt_id_of(raw)
            if pid is None:
                try:
                    pid = prompt_id_decoder.decode(raw).prompt_id
                except DECODE_ERRORS:
                    reader.decode_row(line, raw)
                    raise TraceFormatError(reader.path, line, "prompt_id", "cannot be read") from None
            digest = sha256(raw).digest()[:16]
            number = index_of.get(pid)
            if number is None:
                index_of[pid] = compact.add(run, line, digest, self._store(raw), len(raw), *self._light(reader, line, raw))
                self.order.append(pid)
                continue
            n = counts[number]
            if n >= 0:  # every run so far that holds it holds this very row
                after = first_run[number] + n
                if after == run and digests[number * 16 : number * 16 + 16] == digest:
                    counts[number] = n + 1
                    continue
                if after - 1 == run:
                    raise TraceFormatError(reader.path, line, "prompt_id", f"duplicate prompt id {pid!r}")
                prompt = self._promote(number)
            else:
                prompt = self.promoted[number]
                if run in prompt.runs:
                    raise TraceFormatError(reader.path, line, "prompt_id", f"duplicate prompt id {pid!r}")
            self._add_row(prompt, run, reader, line, raw, digest)

    def _light(self, reader: TraceReader, line: int, raw: bytes) -> tuple[int, int]:
        """The number of tokens and the finish reason of a row seen for the first time."""
        try:
            row = _light_decoder.decode(raw)
        except DECODE_ERRORS:
            reader.decode_row(line, raw)  # names the problem
            raise TraceFormatError(reader.path, line, "token_ids", "cannot be read") from None
        finish = self.finishes.get(row.finish_reason)
        if finish is None:
            finish = self.finishes[row.finish_reason] = len(self.finishes)
        return len(row.token_ids), finish

    def _add_row(self, prompt: _Prompt, run: int, reader: TraceReader, line: int, raw: bytes, digest: bytes) -> None:
        prompt.runs.add(run)
        keys = prompt.rows.get(digest)
        if keys is None:
            keys = self._new_row(prompt, run, reader, line, raw)
            prompt.rows[digest] = keys
        token_key, logprob_key = keys
        variant = prompt.variants[token_key]
        variant.runs.append(run)
        variant.logprobs[logprob_key].runs.append(run)

    def _promote(self, number: int) -> _Prompt:
        """Full bookkeeping for a prompt whose rows are no longer all the same."""
        c = self.compact
        first, count = c.first_run[number], c.count[number]
        stored = _Stored(first, c.line[number], c.offset[number], c.length[number])
        self.store.seek(stored.offset)
        raw = self.store.read(stored.length)
        prompt = _Prompt(order=number)
        prompt.rows[bytes(c.digest(number))] = self._new_row(prompt, first, self.readers[first], stored.line, raw, stored)
        for run in range(first, first + count):
            self._add_row(prompt, run, self.readers[run], stored.line, raw, bytes(c.digest(number)))
        c.count[number] = -1
        self.promoted[number] = prompt
        return prompt

    def _new_row(
        self, prompt: _Prompt, run: int, reader: TraceReader, line: int, raw: bytes, stored: _Stored | None = None
    ) -> tuple[bytes, bytes]:
        reader.decode_row(line, raw)  # every rule of the format, once per distinct row
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
            stored = stored or _Stored(run, line, self._store(raw), len(raw))
            variant.logprobs[logprob_key] = _LogprobVariant([], stored)
            if variant.first is None:
                variant.first = stored
        return token_key, logprob_key

    def _store(self, raw: bytes) -> int:
        offset = self.store_end
        self.store.seek(offset)
        self.store.write(raw)
        self.store_end += len(raw)
        return offset

    def _load(self, stored: _Stored) -> Any:
        self.store.seek(stored.offset)
        return decode_row(self.store.read(stored.length))

    # -- after reading ----------------------------------------------------------------

    def compare(self, reference: _Stored, other: _Stored) -> Any:
        ctx = Context.of(self.headers[reference.run], self.headers[other.run], self.options)
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
    """Every prompt's aggregate, in report order, without one object per prompt.

    A prompt whose row is the same byte for byte in every run is rebuilt from its
    compact record when asked for; the others are kept encoded, in a temporary file
    once they pass 8 MB.
    """

    def __init__(self, order: list[str], compact: _Compact, finishes: list[str], runs: int, logprobs: bool) -> None:
        self._order = order
        self._count = compact.count
        self._tokens = compact.tokens
        self._finish = compact.finish
        self._finishes = finishes
        self._runs = runs
        self._logprobs = logprobs
        self._kept: dict[int, tuple[int, int]] = {}
        self._file = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - lives with self
        self._end = 0

    def keep(self, number: int, result: PromptAggregate) -> None:
        data = _encoder.encode(result)
        self._file.seek(self._end)
        self._file.write(data)
        self._kept[number] = (self._end, len(data))
        self._end += len(data)

    def __len__(self) -> int:
        return len(self._order)

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
        kept = self._kept.get(index)
        if kept is not None:
            self._file.seek(kept[0])
            return _decoder.decode(self._file.read(kept[1]))
        return self._identical(index)

    def _identical(self, index: int) -> PromptAggregate:
        runs, logprobs = self._runs, self._logprobs
        variant = Variant(
            index=0,
            runs=list(range(runs)),
            tokens=self._tokens[index],
            finish_reason=self._finishes[self._finish[index]],
            logprob_variants=1,
            first_divergence=None,
            run=0,
            reference_run=0,
            comparison=None,
        )
        return PromptAggregate(
            prompt_id=self._order[index],
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
        for i in range(len(self)):
            yield self[i]

    def indented(self, indent: Callable[[Any, bytes], bytes], prefix: bytes) -> Iterator[bytes]:
        """Each prompt as ``indent(msgspec.to_builtins(prompt), prefix)`` would write it.

        The prompts that are the same in every run differ only in their id, number of
        tokens and finish reason: they are written from one template.
        """
        if not self._order:
            return
        pid, tokens, finish = "\x00id", 7_390_421_983, "\x00finish"
        sample = msgspec.structs.replace(self._identical(0), prompt_id=pid)
        sample = msgspec.structs.replace(
            sample, variants=[msgspec.structs.replace(sample.variants[0], tokens=tokens, finish_reason=finish)]
        )
        template = indent(msgspec.to_builtins(sample), prefix)
        head, rest = template.split(orjson.dumps(pid), 1)
        middle, rest = rest.split(str(tokens).encode(), 1)
        middle2, tail = rest.split(orjson.dumps(finish), 1)
        finishes = [orjson.dumps(f) for f in self._finishes]
        kept, order, counts, numbers, ends = self._kept, self._order, self._count, self._tokens, self._finish
        dumps, join = orjson.dumps, b"".join
        for index in range(len(order)):
            if index in kept:
                yield indent(msgspec.to_builtins(self[index]), prefix)
            else:
                yield join((head, dumps(order[index]), middle, b"%d" % numbers[index], middle2, finishes[ends[index]], tail))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<AggregatePrompts: {len(self)} prompts>"


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
        work.read_all()
        if options.tier == 2:
            for path, header in zip(files, work.headers):
                if header.logprobs.semantics == "none":
                    raise UsageError(
                        f"{path}: records no logprobs (logprobs.semantics is 'none'), so Tier 2 cannot be judged; "
                        "use --tier 1"
                    )
        return _report(work)
    finally:
        work.store.close()


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
    logprobs = all(h.logprobs.semantics != "none" for h in work.headers)
    compact = work.compact
    for number in range(len(compact.count)):
        if compact.count[number] >= 0 and compact.count[number] != runs:  # missing from some runs
            work._promote(number)
    prompts = AggregatePrompts(work.order, compact, list(work.finishes), runs, logprobs)
    positions: Counter[int] = Counter()
    disagreeing: set[int] = set()
    classes: Counter[str] = Counter(identical=len(work.order) - len(work.promoted))
    tier1_stable = tier2_stable = len(work.order) - len(work.promoted)
    splits: list[PromptAggregate] = []
    split_count = missing_count = 0
    for number in sorted(work.promoted):
        result, found = work.prompt(work.order[number], work.promoted.pop(number), runs, logprobs)
        prompts.keep(number, result)
        positions.update(found)
        disagreeing.update(result.missing)
        for variant in result.variants[1:]:
            disagreeing.update(variant.runs)
        classes[result.classification] += 1
        tier1_stable += result.tier1
        tier2_stable += bool(result.tier2)
        if result.completions > 1:
            split_count += 1
            if len(splits) < 3:
                splits.append(result)
        missing_count += bool(result.missing)
    tier1 = tier1_stable == len(prompts)
    tier2: bool | None = False if not tier1 else (None if not logprobs else tier2_stable == len(prompts))
    summary = AggregateSummary(
        runs=runs,
        prompts=len(prompts),
        tier1_stable=tier1_stable,
        tier2_stable=tier2_stable if logprobs else None,
        runs_agreeing=runs - len(disagreeing),
        classifications={c: classes[c] for c in CLASSIFICATIONS},
        divergence_positions=[PositionCount(index=i, count=n) for i, n in sorted(positions.items())],
    )
    overall = next((c for c in CLASSIFICATIONS if classes[c]), "identical")
    text = _verdict_text(summary, splits, split_count, missing_count, tier1, tier2)
    return AggregateReport.of(
        work.options,
        runs=work.infos,
        setup=_setup(work.headers),
        verdict=AggregateVerdict(classification=overall, tier1=tier1, tier2=tier2, text=text),
        summary=summary,
        prompts=prompts,
        notes=list(work.notes),
    )


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

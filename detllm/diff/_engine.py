"""``diff_traces``: compare two traces, streaming, and build the report."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import NoReturn


from ..errors import NewerMinorVersionWarning, TraceFormatError, UsageError
from ..reader import TraceReader, open_trace
from ..trace import Header, Row, may_break_other_rules, row_rules_key
from ._align import Aligner, Only, Pair, Same
from ._analysis import Context, compare, identical_encoded, unmatched
from ._header import compare_setup, with_input_evidence
from .._numbers import count
from ._model import CLASSIFICATIONS, STATUSES, TIER1_FAILURES, PositionCount, PromptResult, Setup, Summary, TraceInfo, Verdict
from ._options import DiffOptions
from ._parallel import Item, Outcome, PairPool, can_fork
from ._report import DiffReport
from ._results import PromptResults
from .._json_errors import DECODE_ERRORS
from ._rows import FastRow, RowProblem, check_prompt_id, decode_row, from_row
from ._locate import locate_trace

_RIGHT_ONLY_KEY = 1 << 48
"""Sort key offset that puts the right-only prompts after every left row."""


def diff_traces(
    left: str | os.PathLike[str],
    right: str | os.PathLike[str],
    options: DiffOptions | None = None,
) -> DiffReport:
    """Compare two traces (files, or run directories holding one trace each).

    Raises :class:`~detllm.errors.TraceFormatError` for an invalid trace,
    :class:`~detllm.errors.InputError` for a missing one and
    :class:`~detllm.errors.UsageError` for options the traces cannot honour.
    """
    options = options or DiffOptions()
    left_path = locate_trace(left, allow_incomplete=options.allow_incomplete)
    right_path = locate_trace(right, allow_incomplete=options.allow_incomplete)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NewerMinorVersionWarning)
        left_reader = open_trace(left_path, allow_incomplete=options.allow_incomplete, verify_digest=False)
        try:
            right_reader = open_trace(right_path, allow_incomplete=options.allow_incomplete, verify_digest=False)
        except BaseException:
            left_reader.close()
            raise
    with left_reader, right_reader:
        _check_tier(options, left_reader, right_reader)
        workers = options.workers or _auto_workers(left_path, right_path)
        return _Comparison(left_reader, right_reader, options, workers).run()


AUTO_PARALLEL_BYTES = 64 * 1024 * 1024
"""With ``workers=0``, traces this large together get a second process when a core is free."""


def _auto_workers(*paths: str) -> int:
    """2 for large traces when the machine has a core to spare, else 1.

    A second process only pays when it runs beside the first: on a machine whose
    cores are all busy it adds its overhead and takes nothing off.
    """
    size = sum(os.path.getsize(p) for p in paths)
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return 2 if size >= AUTO_PARALLEL_BYTES and cores >= 2 and busy <= cores - 1 else 1


def compare_rows(
    left: Row,
    right: Row,
    left_header: Header,
    right_header: Header,
    options: DiffOptions | None = None,
) -> PromptResult:
    """Compare two in-memory rows of one prompt, as ``diff_traces`` compares a pair.

    For callers that hold rows rather than files (a check comparing its repeats).
    Raises ``ValueError`` when a row breaks the format's rules.
    """
    ctx = Context.of(left_header, right_header, options or DiffOptions())
    try:
        return compare(ctx, from_row(left), from_row(right), 0, 0)
    except RowProblem as problem:
        raise ValueError(f"{problem.side} row {left.prompt_id!r}: {problem.field}: {problem.problem}") from None


def _check_tier(options: DiffOptions, left: TraceReader, right: TraceReader) -> None:
    if options.tier != 2:
        return
    for reader in (left, right):
        if reader.header.logprobs.semantics == "none":
            raise UsageError(
                f"{reader.path}: records no logprobs (logprobs.semantics is 'none'), so Tier 2 cannot be judged; "
                "use --tier 1"
            )


def trace_info(path: str, header: Header, rows: int, complete: bool) -> TraceInfo:
    backend = header.backend.name + (f" {header.backend.version}" if header.backend.version else "")
    return TraceInfo(
        path=path,
        created_at=header.created_at,
        backend=backend,
        model=header.model.id,
        dtype=header.dtype,
        device=header.device,
        batch_size=header.batch.size,
        do_sample=header.decoding.do_sample,
        logprobs=header.logprobs.semantics,
        top_k=header.logprobs.top_k,
        rows=rows,
        complete=complete,
    )


class _Comparison:
    def __init__(self, left: TraceReader, right: TraceReader, options: DiffOptions, workers: int = 1) -> None:
        self.left = left
        self.right = right
        self.options = options
        self.workers = workers
        self.ctx = Context.of(left.header, right.header, options)
        self.results = PromptResults()
        self.statuses: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self.positions: Counter[int] = Counter()

    def run(self) -> DiffReport:
        setup = compare_setup(self.left.header, self.right.header)
        paths = (self.left.path, self.right.path)
        pool = PairPool(self.ctx, self.workers, paths) if self.workers > 1 and can_fork() else None
        try:
            left_digest = pool.digest(self.left.path) if pool is not None else None
            check = self._check_both if row_rules_key(self.left.header) != row_rules_key(self.right.header) else None
            aligner = Aligner(self.left, self.right, self.options.buffer_bytes, left_digest, check)
            try:
                self._read(aligner, pool)
            except TraceFormatError:
                aligner.check_repeats()  # a prompt id repeated in the rows read before is the first problem
                raise
            if pool is not None:
                for outcome, batch in pool.finish():
                    self._outcome(outcome, batch)
        finally:
            if pool is not None:
                pool.close()
        return self._report(setup, aligner)

    def _read(self, aligner: Aligner, pool: PairPool | None) -> None:
        """Each event of the aligner: a result, or a pair for a worker."""
        add = self._add
        statuses, classes, append = self.statuses, self.classes, self.results.append_encoded
        check = aligner.check_same
        for event in aligner:
            if check is not None and type(event) is Pair and event.left_raw == event.right_raw:
                check(event.left_line, event.right_line, event.left_raw)
            if type(event) is Same:
                statuses["identical"] += 1
                classes["identical"] += 1
                append(identical_encoded(event.prompt_id, event.left_index, event.right_index), event.left_index)
            elif type(event) is Pair:
                if pool is None:
                    add(self._pair(event), event.left_index)
                else:
                    item = Item(
                        event.left_index,
                        event.left_index,
                        event.left_line,
                        event.left_raw,
                        event.left_offset,
                        len(event.left_raw),
                        event.right_index,
                        event.right_line,
                        event.right_raw,
                        event.right_offset,
                        len(event.right_raw),
                    )
                    for outcome, batch in pool.add(item):
                        self._outcome(outcome, batch)
            else:
                assert isinstance(event, Only)
                key = event.index if event.side == "left" else _RIGHT_ONLY_KEY + event.index
                add(unmatched(event.prompt_id, event.side, event.index), key)

    def _report(self, setup: Setup, aligner: Aligner) -> DiffReport:
        self.results.finish()
        summary = Summary(
            left_rows=self.left.rows_read,
            right_rows=self.right.rows_read,
            compared=sum(n for s, n in self.statuses.items() if s not in ("left_only", "right_only")),
            statuses={s: self.statuses[s] for s in STATUSES},
            classifications={c: self.classes[c] for c in CLASSIFICATIONS},
            divergence_positions=[PositionCount(index=i, count=n) for i, n in sorted(self.positions.items())],
        )
        setup = with_input_evidence(setup, self.statuses["inputs_differ"], summary.compared)
        return DiffReport.of(
            self.options,
            left=trace_info(self.left.path, self.left.header, self.left.rows_read, self.left.complete),
            right=trace_info(self.right.path, self.right.header, self.right.rows_read, self.right.complete),
            setup=setup,
            verdict=verdict(summary, self.ctx.logprobs, self.options.atol),
            summary=summary,
            prompts=self.results,
            notes=list(self._notes(aligner)),
        )

    def _add(self, result: PromptResult, key: int) -> None:
        self.statuses[result.status] += 1
        self.classes[result.classification] += 1
        if result.divergence is not None:
            self.positions[result.divergence.index] += 1
        self.results.append(result, key)

    def _outcome(self, outcome: Outcome, batch: list[Item]) -> None:
        if outcome.problem is not None:
            item = next(i for i in batch if i.key == outcome.key)
            side, field, problem = outcome.problem
            assert item.left_raw is not None and item.right_raw is not None
            if side == "left":
                self._bad(self.left, item.left_line, item.left_raw, RowProblem(side, field, problem))
            self._bad(self.right, item.right_line, item.right_raw, RowProblem(side, field, problem))
        assert outcome.encoded is not None
        self.statuses[outcome.status] += 1
        self.classes[outcome.classification] += 1
        if outcome.divergence is not None:
            self.positions[outcome.divergence] += 1
        self.results.append_encoded(outcome.encoded, outcome.key)

    def _pair(self, event: Pair) -> PromptResult:
        left_row = self._decode(self.left, event.left_line, event.left_raw)
        right_row = self._decode(self.right, event.right_line, event.right_raw)
        try:
            return compare(self.ctx, left_row, right_row, event.left_index, event.right_index)
        except RowProblem as problem:
            if problem.side == "left":
                self._bad(self.left, event.left_line, event.left_raw, problem)
            self._bad(self.right, event.right_line, event.right_raw, problem)

    def _decode(self, reader: TraceReader, line: int, raw: bytes) -> FastRow:
        try:
            row = decode_row(raw)
            check_prompt_id(raw, row, "")
        except DECODE_ERRORS as exc:
            self._bad(reader, line, raw, RowProblem("", "-", str(exc)))
        except RowProblem as problem:
            self._bad(reader, line, raw, problem)
        return row

    def _check_both(self, left_line: int, right_line: int, raw: bytes) -> None:
        """A row both traces hold byte for byte, under headers whose row rules differ:
        checked under each (it may break the rules of one), as ``validate`` would."""
        left, right = self.left, self.right
        if may_break_other_rules(raw, left.header, right.header):
            left.decode_row(left_line, raw)
        if may_break_other_rules(raw, right.header, left.header):
            right.decode_row(right_line, raw)

    @staticmethod
    def _bad(reader: TraceReader, line: int, raw: bytes, problem: RowProblem) -> NoReturn:
        # The reader's full check names the first problem exactly as `validate` would.
        reader.decode_row(line, raw)
        raise TraceFormatError(reader.path, line, problem.field, problem.problem)

    def _notes(self, aligner: Aligner) -> list[str]:
        notes: list[str] = []
        for side, reader in (("left", self.left), ("right", self.right)):
            notes.extend(reader.warnings)
            if not reader.complete:
                notes.append(
                    f"The {side} trace is incomplete (no footer; read with --allow-incomplete): "
                    f"its {reader.rows_read} complete rows were compared."
                )
        if aligner.waited:
            where = f", {aligner.spilled} of them in a temporary file" if aligner.spilled else ""
            notes.append(
                f"The traces list their prompts in different orders; {count(aligner.waited, 'row')} waited for "
                f"{'its' if aligner.waited == 1 else 'their'} match{where}."
            )
        semantics = (self.left.header.logprobs.semantics, self.right.header.logprobs.semantics)
        if semantics[0] != semantics[1] and "none" not in semantics:
            notes.append(
                f"The logprobs mean different things ({semantics[0]} vs {semantics[1]}): drift between them "
                "includes that difference, not only noise."
            )
        return notes


def verdict(summary: Summary, logprobs: bool, atol: float) -> Verdict:
    """The overall classification and each tier's result, in words."""
    statuses, classes = summary.statuses, summary.classifications
    overall = next((c for c in CLASSIFICATIONS if classes.get(c)), "identical")
    tier1 = not any(statuses.get(s) for s in TIER1_FAILURES)
    tier2: bool | None
    if not tier1:
        tier2 = False
    elif not logprobs:
        tier2 = None
    else:
        tier2 = statuses.get("logprobs_differ", 0) == 0
    compared = summary.compared
    diverging = sum(statuses.get(s, 0) for s in ("tokens_diverge", "stopped_early"))
    parts: list[str] = []
    if overall == "identical":
        if logprobs:
            within = f" within atol {atol:g}" if atol else ""
            parts.append(f"All {compared} prompts are identical (tokens and logprobs{within}).")
        else:
            parts.append(
                f"All {compared} prompts have identical tokens; the traces record no logprobs, so Tier 2 "
                "cannot be judged."
            )
    else:
        if diverging:
            kinds = ", ".join(
                f"{classes[c]} {c}"
                for c in ("decisive_flip", "near_tie_flip", "sampling_divergence", "stop_divergence", "inconclusive")
                if classes.get(c)
            )
            tokens, stopped = statuses.get("tokens_diverge", 0), statuses.get("stopped_early", 0)
            clauses = []
            if tokens:
                clauses.append(f"{tokens} of {count(compared, 'prompt')} "
                               + ("diverges in its tokens" if tokens == 1 else "diverge in their tokens"))
            if stopped:
                clauses.append(f"{stopped} of {count(compared, 'prompt')} "
                               + ("stops" if stopped == 1 else "stop")
                               + " at another length, the shorter output a prefix of the longer")
            parts.append(f"{'; '.join(clauses)} ({kinds}).")
        differ = statuses.get("logprobs_differ", 0)
        if differ:
            parts.append(f"{differ} of {count(compared, 'prompt')} {'differs' if differ == 1 else 'differ'} only in logprobs.")
        inputs = statuses.get("inputs_differ", 0)
        if inputs:
            parts.append(f"{count(inputs, 'prompt')} {'has' if inputs == 1 else 'have'} different input token ids.")
        only = statuses.get("left_only", 0) + statuses.get("right_only", 0)
        if only:
            parts.append(
                f"{count(only, 'prompt')} {'is' if only == 1 else 'are'} in one trace only "
                f"({statuses.get('left_only', 0)} left, {statuses.get('right_only', 0)} right)."
            )
    t2 = "cannot be judged" if tier2 is None else ("holds" if tier2 else "fails")
    if atol and tier2 is not None:
        t2 += f" with atol {atol:g}"
        if tier1 and not tier2:
            t2 += (" (logprobs within it count as equal, but a top-k list that holds other tokens, or an "
                   "alternative moved by more, does not)")
    parts.append(f"Tier 1 {'holds' if tier1 else 'fails'}; Tier 2 {t2}.")
    return Verdict(classification=overall, tier1=tier1, tier2=tier2, text=" ".join(parts))

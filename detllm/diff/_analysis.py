"""Per-prompt comparison: status, first divergence, drift and classification."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import msgspec

from ..trace import Header
from ._header import compare_headers, computing_change
from ._model import Divergence, Drift, Evidence, InputDifference, PromptResult, Side, Token, TopEntry
from .._numbers import count, num, ratio
from ._options import DEFAULT_NOISE_FLOOR, DiffOptions, noise_floor_for
from ._rows import FastRow, SideRow, Step


@dataclass(frozen=True)
class Context:
    """What every prompt's comparison needs to know about the two traces."""

    left: Header
    right: Header
    options: DiffOptions
    noise_floor: float
    noise_floor_label: str
    sampling: bool
    logprobs: bool
    moved_by: str | None = None
    """The settings that differ in what they compute (model, dtype, ...): what can move a near tie."""

    @classmethod
    def of(cls, left: Header, right: Header, options: DiffOptions) -> Context:
        if options.noise_floor is not None:
            floor, label = options.noise_floor, "the noise floor set in the options"
        else:
            floors = [(noise_floor_for(h.dtype), h.dtype) for h in (left, right)]
            known = [(f, d) for f, d in floors if f is not None]
            if known:
                floor, dtype = max(known)
                label = f"the {dtype} noise floor"
            else:
                floor, label = DEFAULT_NOISE_FLOOR, f"the default noise floor (dtype {left.dtype!r} is not known)"
        return cls(
            left=left,
            right=right,
            options=options,
            noise_floor=floor,
            noise_floor_label=label,
            sampling=left.decoding.do_sample or right.decoding.do_sample,
            logprobs=left.logprobs.semantics != "none" and right.logprobs.semantics != "none",
            moved_by=computing_change(compare_headers(left, right)),
        )


def first_difference(a: list[int] | list[float] | list[object], b: list[int] | list[float] | list[object]) -> int:
    """The first index where two lists differ; the shorter length when one is a prefix.

    Halves the range with slice comparisons, which run in C, before a short scan.
    """
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low]; a[:high] != b[:high]
    while high - low > 16:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return next(i for i in range(low, high) if a[i] != b[i])


_IDENTICAL = (
    b',"status":"identical","classification":"identical","left_index":%d,"right_index":%d,'
    b'"divergence":null,"drift":null,"evidence":null,"inputs":null,"notes":[]}'
)
_encode = msgspec.json.encode


def identical_encoded(prompt_id: str, left_index: int, right_index: int) -> bytes:
    """``identical(...)`` already encoded: byte-identical rows are most rows, and cheap."""
    return b'{"prompt_id":' + _encode(prompt_id) + _IDENTICAL % (left_index, right_index)


def identical(prompt_id: str, left_index: int | None, right_index: int | None) -> PromptResult:
    return PromptResult(
        prompt_id=prompt_id,
        status="identical",
        classification="identical",
        left_index=left_index,
        right_index=right_index,
    )


def unmatched(prompt_id: str, side: str, index: int) -> PromptResult:
    return PromptResult(
        prompt_id=prompt_id,
        status="left_only" if side == "left" else "right_only",
        classification="unmatched",
        left_index=index if side == "left" else None,
        right_index=index if side == "right" else None,
        evidence=Evidence(reason=f"The prompt is only in the {side} trace."),
    )


def compare(ctx: Context, left_row: FastRow, right_row: FastRow, left_index: int, right_index: int) -> PromptResult:
    """Compare the rows of one prompt. Raises :class:`RowProblem` for a bad row."""
    left = SideRow(left_row, "left", ctx.left)
    right = SideRow(right_row, "right", ctx.right)
    pid = left_row.prompt_id
    notes: list[str] = []
    if left_row.input_token_ids != right_row.input_token_ids:
        return _input_mismatch(left_row, right_row, left_index, right_index)
    if left_row.prompt is not None and right_row.prompt is not None and left_row.prompt != right_row.prompt:
        notes.append("The prompt texts differ, but they give the same input token ids.")
    lt, rt = left_row.token_ids, right_row.token_ids
    if lt == rt and left_row.finish_reason == right_row.finish_reason:
        return _same_tokens(ctx, left, right, pid, left_index, right_index, notes)
    n = min(len(lt), len(rt))
    index = first_difference(lt, rt)
    drift = _drift(ctx, left, right, index)
    if index == n:
        return _stop(ctx, left, right, pid, left_index, right_index, index, drift, notes)
    return _flip(ctx, left, right, pid, left_index, right_index, index, drift, notes)


# -- drift -----------------------------------------------------------------------------


def _drift(ctx: Context, left: SideRow, right: SideRow, n: int) -> Drift | None:
    """Drift of the chosen tokens' logprobs over the first ``n`` tokens."""
    if not ctx.logprobs:
        return None
    a, b = left.row.logprobs, right.row.logprobs
    assert a is not None and b is not None
    ta, tb = left.row.top_logprobs, right.row.top_logprobs
    assert ta is not None and tb is not None
    top_first = first_difference(ta[:n], tb[:n])
    top_first_index = None if top_first == n else top_first
    first = first_difference(a[:n], b[:n])
    if first == n:
        return Drift(compared=n, first_index=None, max_abs=0.0, max_index=None, rms=0.0, top_first_index=top_first_index)
    deltas = list(map(abs, map(operator.sub, a[:n], b[:n])))
    largest = max(deltas)
    rms = math.sqrt(math.fsum(map(operator.mul, deltas, deltas)) / n)
    return Drift(
        compared=n,
        first_index=first,
        max_abs=largest,
        max_index=deltas.index(largest),
        rms=rms,
        top_first_index=top_first_index,
    )


def _steps_equal(ctx: Context, left: SideRow, right: SideRow, index: int) -> bool:
    """Whether step ``index``'s top-k lists agree within ``atol`` (over the shorter k)."""
    a, b = left.step(index), right.step(index)
    k = min(left.top_k, right.top_k)
    a, b = a[:k], b[:k]
    if len(a) != len(b):
        return False
    atol = ctx.options.atol
    if atol == 0:
        return a == b
    mapped = dict(b)
    return all(token in mapped and abs(value - mapped[token]) <= atol for token, value in a)


# -- same tokens -------------------------------------------------------------------------


def _same_tokens(
    ctx: Context, left: SideRow, right: SideRow, pid: str, li: int, ri: int, notes: list[str]
) -> PromptResult:
    n = len(left.row.token_ids)
    drift = _drift(ctx, left, right, n)
    if drift is None or (drift.first_index is None and drift.top_first_index is None):
        return PromptResult(
            prompt_id=pid, status="identical", classification="identical", left_index=li, right_index=ri, notes=notes
        )
    atol = ctx.options.atol
    chosen_differ = drift.max_abs > atol
    top_first = drift.top_first_index
    if top_first is not None and (atol > 0 or left.top_k != right.top_k or not chosen_differ):
        ta, tb = left.row.top_logprobs, right.row.top_logprobs
        assert ta is not None and tb is not None
        top_first = next((i for i in range(top_first, n) if ta[i] != tb[i] and not _steps_equal(ctx, left, right, i)), None)
        drift = Drift(
            compared=drift.compared,
            first_index=drift.first_index,
            max_abs=drift.max_abs,
            max_index=drift.max_index,
            rms=drift.rms,
            top_first_index=top_first,
        )
    if not chosen_differ and top_first is None:
        if drift.first_index is not None:
            notes.append(f"The logprobs differ by at most {num(drift.max_abs)}, within atol {num(atol)}.")
        return PromptResult(
            prompt_id=pid,
            status="identical",
            classification="identical",
            left_index=li,
            right_index=ri,
            drift=drift,
            notes=notes,
        )
    if chosen_differ:
        assert drift.first_index is not None
        reason = (
            f"The tokens are equal; their logprobs first differ at token {drift.first_index}, by up to "
            f"{num(drift.max_abs)} (token {drift.max_index}), RMS {num(drift.rms)} over {count(n, 'token')}."
        )
    else:
        reason = (
            f"The tokens and their logprobs are equal; the top-k alternatives first differ at token {top_first}."
            if not atol
            else f"The tokens are equal and their logprobs within atol {num(atol)}; the top-k alternatives first "
            f"differ beyond it at token {top_first} (a token entering or leaving the top-k is never within a tolerance)."
        )
    return PromptResult(
        prompt_id=pid,
        status="logprobs_differ",
        classification="logprob_drift",
        left_index=li,
        right_index=ri,
        drift=drift,
        evidence=Evidence(reason=reason + " Tier 1 holds; Tier 2 does not."),
        notes=notes,
    )


# -- inputs ----------------------------------------------------------------------------------


def _input_mismatch(left: FastRow, right: FastRow, li: int, ri: int) -> PromptResult:
    a, b = left.input_token_ids, right.input_token_ids
    index = first_difference(a, b)
    prompts_differ = None if left.prompt is None or right.prompt is None else left.prompt != right.prompt
    same_output = left.token_ids == right.token_ids
    reason = (
        f"The input token ids differ from position {index} ({len(a)} vs {len(b)} input tokens), so the "
        "outputs were not computed from the same input: consistent with different prompts, tokenizers "
        "or chat templates."
    )
    notes = ["The generated tokens are equal nonetheless."] if same_output else []
    return PromptResult(
        prompt_id=left.prompt_id,
        status="inputs_differ",
        classification="input_mismatch",
        left_index=li,
        right_index=ri,
        inputs=InputDifference(index=index, left_length=len(a), right_length=len(b), prompts_differ=prompts_differ),
        evidence=Evidence(reason=reason),
        notes=notes,
    )


# -- divergence --------------------------------------------------------------------------------


def _tokens(row: SideRow, ids: list[int]) -> list[Token]:
    return [Token(id=t, text=row.text(t)) for t in ids]


def _top(row: SideRow, step: Step) -> list[TopEntry]:
    return [TopEntry(id=t, text=row.text(t), logprob=v) for t, v in step]


def _side(ctx: Context, row: SideRow, other: SideRow, index: int) -> Side:
    tokens = row.row.token_ids
    if index >= len(tokens):
        return Side(
            token=None,
            logprob=None,
            other_logprob=None,
            rank_in_other=None,
            margin=None,
            top=[],
            continuation=[],
            length=len(tokens),
            finish_reason=row.row.finish_reason,
        )
    token = tokens[index]
    logprob = other_logprob = margin = None
    rank = None
    top: list[TopEntry] = []
    if ctx.logprobs:
        assert row.row.logprobs is not None
        logprob = row.row.logprobs[index]
        step = row.step(index)
        top = _top(row, step)
        if len(step) >= 2:
            margin = step[0][1] - step[1][1]
        if index < len(other.row.token_ids):
            for position, (candidate, value) in enumerate(other.step(index), start=1):
                if candidate == token:
                    rank, other_logprob = position, value
                    break
    end = index + ctx.options.continuation_tokens
    return Side(
        token=Token(id=token, text=row.text(token)),
        logprob=logprob,
        other_logprob=other_logprob,
        rank_in_other=rank,
        margin=margin,
        top=top,
        continuation=_tokens(row, tokens[index:end]),
        length=len(tokens),
        finish_reason=row.row.finish_reason,
    )


def _prefetch_texts(ctx: Context, row: SideRow, index: int, start: int) -> None:
    tokens = row.row.token_ids
    wanted = list(tokens[start : index + ctx.options.continuation_tokens])
    if ctx.logprobs and index < len(tokens):
        wanted.extend(t for t, _ in row.step(index))
    row.texts(wanted)


def _divergence(ctx: Context, left: SideRow, right: SideRow, index: int) -> Divergence:
    start = max(0, index - ctx.options.context_tokens)
    _prefetch_texts(ctx, left, index, start)
    _prefetch_texts(ctx, right, index, index)
    return Divergence(
        index=index,
        context=_tokens(left, left.row.token_ids[start:index]),
        context_start=start,
        left=_side(ctx, left, right, index),
        right=_side(ctx, right, left, index),
    )


def _noise(ctx: Context, drift: Drift | None, index: int) -> tuple[float, str, str]:
    measured = drift.max_abs if drift is not None else 0.0
    if measured >= ctx.noise_floor and drift is not None and measured > 0:
        return measured, "drift", f"the largest |delta logprob| before token {index}"
    if drift is None or drift.compared == 0:
        why = "no tokens precede the divergence"
    elif measured == 0:
        why = "the logprobs before the divergence agree bit for bit"
    else:
        why = f"the drift before the divergence ({num(measured)}) is smaller"
    return ctx.noise_floor, "floor", f"{ctx.noise_floor_label}; {why}"


def _flip(
    ctx: Context,
    left: SideRow,
    right: SideRow,
    pid: str,
    li: int,
    ri: int,
    index: int,
    drift: Drift | None,
    notes: list[str],
) -> PromptResult:
    divergence = _divergence(ctx, left, right, index)
    evidence = _classify_flip(ctx, left, right, index, drift, divergence)
    return PromptResult(
        prompt_id=pid,
        status="tokens_diverge",
        classification=evidence[0],  # type: ignore[arg-type]
        left_index=li,
        right_index=ri,
        divergence=divergence,
        drift=drift,
        evidence=evidence[1],
        notes=notes,
    )


def _lead(step: Step, own_logprob: float, other_token: int) -> tuple[float, bool]:
    """How much a side preferred its token over ``other_token``; whether it is a bound."""
    for token, value in step:
        if token == other_token:
            return own_logprob - value, False
    # Not listed: its logprob is at most the lowest listed one.
    return own_logprob - step[-1][1], True


def _step_max_abs(a: Step, b: Step) -> float | None:
    mapped = dict(b)
    deltas = [abs(value - mapped[token]) for token, value in a if token in mapped]
    return max(deltas) if deltas else None


def _classify_flip(
    ctx: Context, left: SideRow, right: SideRow, index: int, drift: Drift | None, divergence: Divergence
) -> tuple[str, Evidence]:
    if not ctx.logprobs:
        missing = [side for side, h in (("left", ctx.left), ("right", ctx.right)) if h.logprobs.semantics == "none"]
        reason = (
            f"The {' and '.join(missing)} trace{'s' if len(missing) > 1 else ''} record{'' if len(missing) > 1 else 's'} "
            "no logprobs, so the flip cannot be weighed against the noise."
        )
        if ctx.sampling:
            reason += " With sampling on, it is consistent with different random draws, but nothing here confirms it."
        return "inconclusive", Evidence(reason=reason)
    noise, source, source_text = _noise(ctx, drift, index)
    factor = ctx.options.near_tie_factor
    tolerance = factor * noise
    a_step, b_step = left.step(index), right.step(index)
    k = min(left.top_k, right.top_k)
    step_max = _step_max_abs(a_step, b_step)
    base = {"noise": noise, "noise_source": source, "tolerance": tolerance, "step_max_abs": step_max}
    noise_text = f"the tolerance {num(tolerance)} ({factor:g} x the noise {num(noise)}: {source_text})"
    if ctx.sampling:
        return _classify_sampling(ctx, a_step[:k], b_step[:k], k, tolerance, noise_text, base)
    if len(a_step) < 2 or len(b_step) < 2:
        return "inconclusive", Evidence(
            reason="A top-k list at the divergence has fewer than 2 entries, so the margin between the two "
            "tokens is not recorded.",
            **base,
        )
    a, b = divergence.left, divergence.right
    assert a.token is not None and b.token is not None and a.logprob is not None and b.logprob is not None
    left_lead, left_bound = _lead(a_step, a.logprob, b.token.id)
    right_lead, right_bound = _lead(b_step, b.logprob, a.token.id)
    gap = left_lead + right_lead
    bound = left_bound or right_bound
    numbers = dict(base, left_lead=left_lead, right_lead=right_lead, gap=gap, gap_is_bound=bound)
    contrary = [side for side, lead, is_bound in (("left", left_lead, left_bound), ("right", right_lead, right_bound)) if lead < 0 and not is_bound]
    if contrary:
        side = contrary[0]
        return "inconclusive", Evidence(
            reason=(
                f"Under greedy decoding each side picks its most likely token, but the {side} side's logprobs "
                f"rank the other side's token above its own pick (lead {num(left_lead if side == 'left' else right_lead)}): "
                "the recorded logprobs do not describe how the token was chosen."
            ),
            **numbers,
        )
    if gap > tolerance:
        qualifier = "at least " if bound else ""
        return "decisive_flip", Evidence(
            reason=(
                f"The gap between the two tokens is {qualifier}{num(gap)} ({qualifier}{ratio(gap, noise)} x the "
                f"noise), beyond {noise_text}: consistent with a real difference in the computation (other "
                "weights or settings, a kernel bug, a random-number difference), not with rounding noise alone."
            ),
            **numbers,
        )
    if bound:
        return "inconclusive", Evidence(
            reason=(
                f"A token lies outside the other side's top-{k}; the bound on the gap ({num(gap)}) is within "
                f"{noise_text}, so the evidence neither shows a near tie nor rules one out."
            ),
            **numbers,
        )
    return "near_tie_flip", Evidence(
        reason=(
            f"Each side's token is in the other's top-{k} (ranks {a.rank_in_other} and {b.rank_in_other}); the gap "
            f"{num(gap)} is within {noise_text}: "
            + (
                f"consistent with a near tie that the difference in {ctx.moved_by} tipped the other way."
                if ctx.moved_by
                else "consistent with a near tie that numerical noise resolved differently."
            )
        ),
        **numbers,
    )


def _classify_sampling(
    ctx: Context, a: Step, b: Step, k: int, tolerance: float, noise_text: str, base: dict[str, object]
) -> tuple[str, Evidence]:
    if not a or not b:
        return "inconclusive", Evidence(
            reason="With sampling on, the flip is consistent with different random draws, but a top-k list at "
            "the divergence is empty, so the two distributions cannot be compared.",
            **base,  # type: ignore[arg-type]
        )
    step_max = base["step_max_abs"]
    agree, why = _distributions_agree(a, b, k, tolerance)
    seeds = (ctx.left.decoding.seed, ctx.right.decoding.seed)
    if agree:
        if seeds[0] != seeds[1]:
            cause = f"different seeds ({seeds[0]} vs {seeds[1]})"
        else:
            cause = "the random state differing between the runs (unseeded, or consumed differently, e.g. by batching)"
        return "sampling_divergence", Evidence(
            reason=(
                f"Sampling is on and the step's top-{k} distributions agree (largest |delta logprob| "
                f"{num(step_max)  if isinstance(step_max, float) else 'n/a'}, within {noise_text}), yet the picks "
                f"differ: consistent with {cause}, not with a change in the model's distribution."
            ),
            **base,  # type: ignore[arg-type]
        )
    return "decisive_flip", Evidence(
        reason=(
            f"Sampling is on, but the step's top-{k} distributions differ beyond {noise_text} ({why}): "
            "consistent with a real difference in the computation, not only in the random draw."
        ),
        **base,  # type: ignore[arg-type]
    )


def _distributions_agree(a: Step, b: Step, k: int, tolerance: float) -> tuple[bool, str]:
    ma, mb = dict(a), dict(b)
    common = ma.keys() & mb.keys()
    if not common:
        return False, "no token is listed on both sides"
    for token in sorted(common):
        if abs(ma[token] - mb[token]) > tolerance:
            return False, f"token {token}: {num(ma[token])} vs {num(mb[token])}"
    for own, other in ((ma, b), (mb, a)):
        full = len(other) >= k
        floor = other[-1][1]
        for token in sorted(own.keys() - common):
            if not full or own[token] > floor + tolerance:
                return False, f"token {token} ({num(own[token])}) is missing from the other side's top-{k}"
    return True, ""


# -- stop --------------------------------------------------------------------------------------


def _stop(
    ctx: Context,
    left: SideRow,
    right: SideRow,
    pid: str,
    li: int,
    ri: int,
    index: int,
    drift: Drift | None,
    notes: list[str],
) -> PromptResult:
    divergence = _divergence(ctx, left, right, index)
    lf, rf = left.row.finish_reason, right.row.finish_reason
    ln, rn = len(left.row.token_ids), len(right.row.token_ids)
    if ln == rn:
        reason = f"The tokens are equal, but the left side finished with {lf!r} and the right with {rf!r}."
    else:
        short, long_ = ("left", "right") if ln < rn else ("right", "left")
        short_side, long_side = (divergence.left, divergence.right) if ln < rn else (divergence.right, divergence.left)
        token = long_side.token
        assert token is not None
        shown = repr(token.text) if token.text is not None else f"token {token.id}"
        lp = f" (logprob {num(long_side.logprob)})" if long_side.logprob is not None else ""
        reason = (
            f"The {short} side stopped after {count(index, 'token')} ({short_side.finish_reason!r}); the {long_} side "
            f"went on with {shown}{lp}" + (f" and {long_side.length - index - 1} more" if long_side.length - index - 1 else "")
            + (" token." if long_side.length - index - 1 == 1 else (" tokens." if long_side.length - index - 1 else "."))
        )
        header = ctx.left if short == "left" else ctx.right
        if short_side.finish_reason == "length":
            reason += f" The {short} side ran out of its budget (max_new_tokens {header.decoding.max_new_tokens})."
        elif short_side.finish_reason == "abort":
            reason += f" The engine aborted the {short} side's generation."
    return PromptResult(
        prompt_id=pid,
        status="stopped_early",
        classification="stop_divergence",
        left_index=li,
        right_index=ri,
        divergence=divergence,
        drift=drift,
        evidence=Evidence(reason=reason),
        notes=notes,
    )

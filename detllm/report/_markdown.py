"""The Markdown report: ready to paste into a GitHub issue."""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..diff.model import DiffReport, PromptResult, Side, Token, TraceInfo
from .._numbers import count, num
from .._escape import code
from .._escape import markdown as cell
from ._text import DEFAULT_MAX_PROMPTS, collect_prompts, lp, tier_word
from .._text_util import raw_tokens_text

__all__ = ["cell", "code", "divergence_md", "render_diff_markdown", "tok", "value"]
"""``cell`` and ``code`` are :mod:`detllm._escape`'s ``markdown`` and ``code``."""


def tok(t: Token | None) -> str:
    if t is None:
        return "(none)"
    if t.text is None:
        return f"&lt;{t.id}&gt;"
    return code('"' + t.text + '"') + f" ({t.id})"


def value(v: object, absent: bool) -> str:
    if absent:
        return "(absent)"
    return code(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), ensure_ascii=False))


def _trace_rows(left: TraceInfo, right: TraceInfo) -> Iterator[str]:
    yield "| | left | right |"
    yield "|---|---|---|"
    rows = [
        ("trace", code(left.path), code(right.path)),
        ("created", cell(left.created_at), cell(right.created_at)),
        ("backend", cell(left.backend), cell(right.backend)),
        ("model", code(left.model), code(right.model)),
        ("dtype / device", cell(f"{left.dtype} / {left.device}"), cell(f"{right.dtype} / {right.device}")),
        ("batch size", str(left.batch_size), str(right.batch_size)),
        ("decoding", "sampling" if left.do_sample else "greedy", "sampling" if right.do_sample else "greedy"),
        ("logprobs", cell(f"{left.logprobs}, top-{left.top_k}"), cell(f"{right.logprobs}, top-{right.top_k}")),
        ("rows", f"{left.rows}{'' if left.complete else ' (incomplete)'}", f"{right.rows}{'' if right.complete else ' (incomplete)'}"),
    ]
    for name, a, b in rows:
        yield f"| {name} | {a} | {b} |"


def _side_cells(side: Side) -> dict[str, str]:
    if side.token is None:
        return {"token": f"stopped after {count(side.length, 'token')} ({cell(side.finish_reason)})"}
    other = "not in the top-k" if side.rank_in_other is None else f"#{side.rank_in_other}, logprob {lp(side.other_logprob)}"
    return {
        "token": tok(side.token),
        "logprob": lp(side.logprob),
        "on the other side": other,
        "top1 - top2 margin": num(side.margin),
        "continues": code('"' + raw_tokens_text(side.continuation) + '"') if side.continuation else "",
    }


def divergence_md(result: PromptResult, factor: float, k: int, title: str | None = None) -> Iterator[str]:
    """One prompt's first divergence: context, both sides, the top-k table, the evidence."""
    d = result.divergence
    assert d is not None
    yield title or f"#### {code(result.prompt_id)}: {cell(result.classification)} at token {d.index}"
    yield ""
    if d.context:
        start = "..." if d.context_start > 0 else ""
        span = f"token {d.context_start}" if d.context_start == d.index - 1 else f"tokens {d.context_start}-{d.index - 1}"
        yield f"Common context ({span}): {code(start + chr(34) + raw_tokens_text(d.context) + chr(34))}"
        yield ""
    left, right = _side_cells(d.left), _side_cells(d.right)
    yield "| | left | right |"
    yield "|---|---|---|"
    for key in list(dict.fromkeys(list(left) + list(right))):
        yield f"| {key} | {left.get(key, '')} | {right.get(key, '')} |"
    yield ""
    if d.left.top or d.right.top:
        yield f"Top-{k} at token {d.index}:"
        yield ""
        yield "| rank | left token | left logprob | right token | right logprob |"
        yield "|---:|---|---:|---|---:|"
        for i in range(max(len(d.left.top), len(d.right.top))):
            a = d.left.top[i] if i < len(d.left.top) else None
            b = d.right.top[i] if i < len(d.right.top) else None
            yield (
                f"| {i + 1} | {tok(Token(id=a.id, text=a.text)) if a else ''} | {f'{a.logprob:.8g}' if a else ''} "
                f"| {tok(Token(id=b.id, text=b.text)) if b else ''} | {f'{b.logprob:.8g}' if b else ''} |"
            )
        yield ""
    yield from _drift(result, f"the {count(d.index, 'token')} before")
    if result.evidence is not None:
        e = result.evidence
        if e.gap is not None and e.tolerance is not None:
            relation = "&lt;=" if e.gap <= e.tolerance else "&gt;"
            bound = "at least " if e.gap_is_bound else ""
            yield (
                f"Gap {bound}{num(e.gap)} {relation} tolerance {num(e.tolerance)} "
                f"({factor:g} x noise {num(e.noise)}, from the {e.noise_source})."
            )
            yield ""
        yield f"> {cell(e.reason)}"
        yield ""
    for note in result.notes:
        yield f"Note: {cell(note)}"
        yield ""


def _drift(result: PromptResult, over: str) -> Iterator[str]:
    drift = result.drift
    if drift is None:
        return
    if drift.compared == 0:
        yield "Drift: none measured, no tokens precede the divergence."
    elif drift.first_index is None:
        yield f"Drift over {over}: none, the logprobs agree bit for bit."
    else:
        yield (
            f"Drift over {over}: first at token {drift.first_index}, max \\|Δ logprob\\| {num(drift.max_abs)} "
            f"(token {drift.max_index}), RMS {num(drift.rms)}."
        )
    yield ""


def render_diff_markdown(report: DiffReport, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    return "\n".join(_lines(report, max_prompts)).rstrip("\n") + "\n"


def _lines(report: DiffReport, max_prompts: int) -> Iterator[str]:
    v = report.verdict
    yield f"### detLLM diff: {code(v.classification)}"
    yield ""
    yield f"**Tier 1: {tier_word(v.tier1)} · Tier 2: {tier_word(v.tier2)}** (judged at Tier {report.options.tier})"
    yield ""
    yield cell(v.text)
    yield ""
    for note in report.notes:
        yield f"Note: {cell(note)}"
        yield ""
    yield from _trace_rows(report.left, report.right)
    yield ""
    yield "| classification | prompts |"
    yield "|---|---:|"
    for name, n in report.summary.classifications.items():
        if n:
            yield f"| {code(name)} | {n} |"
    yield ""
    setup = report.setup
    yield f"**Setup differences.** Attribution: {code(setup.attribution.cause)}. {cell(setup.attribution.text)}"
    yield ""
    if setup.differences:
        yield "| field | left | right | kind |"
        yield "|---|---|---|---|"
        for d in setup.differences:
            kind = cell(d.category) + (f": {cell(d.note)}" if d.note and d.category == "ignored" else "")
            yield f"| {code(d.field)} | {value(d.left, d.absent == 'left')} | {value(d.right, d.absent == 'right')} | {kind} |"
        yield ""
    detailed, drifted, unmatched = collect_prompts(report, max_prompts)
    statuses = report.summary.statuses
    if detailed:
        yield "**First divergences**"
        yield ""
        for result in detailed:
            if result.divergence is not None:
                k = min(report.left.top_k, report.right.top_k)
                yield from divergence_md(result, report.options.near_tie_factor, k)
            else:
                yield f"#### {code(result.prompt_id)}: input_mismatch"
                yield ""
                if result.evidence is not None:
                    yield f"> {cell(result.evidence.reason)}"
                    yield ""
        total = statuses["tokens_diverge"] + statuses["stopped_early"] + statuses["inputs_differ"]
        if total > len(detailed):
            yield f"... and {total - len(detailed)} more diverging prompts (all are in the JSON report)."
            yield ""
    if drifted:
        yield f"**Tokens equal, logprobs differ** ({count(statuses['logprobs_differ'], 'prompt')})"
        yield ""
        yield "| prompt | first differs at | max \\|Δ\\| | at token | RMS |"
        yield "|---|---:|---:|---:|---:|"
        for result in drifted:
            d = result.drift
            assert d is not None
            first = d.first_index if d.first_index is not None else f"top-k at {d.top_first_index}"
            yield f"| {code(result.prompt_id)} | {first} | {num(d.max_abs)} | {d.max_index if d.max_index is not None else ''} | {num(d.rms)} |"
        if statuses["logprobs_differ"] > len(drifted):
            yield f"| ... {statuses['logprobs_differ'] - len(drifted)} more | | | | |"
        yield ""
    for side in ("left", "right"):
        ids = [code(r.prompt_id) for r in unmatched if r.status == f"{side}_only"]
        total = statuses[f"{side}_only"]
        if total:
            more = f", ... ({total - len(ids)} more)" if total > len(ids) else ""
            yield f"**Only in the {side} trace** ({total}): " + ", ".join(ids) + more
            yield ""

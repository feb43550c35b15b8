"""The text report: for a terminal 80 columns wide."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator

from ..diff.model import DiffReport, Divergence, HeaderDifference, PromptResult, Side, TraceInfo
from .._numbers import count, num
from .._escape import text as escape
from .._text_util import clip, columns, pad, token, tokens_text, wrap

WIDTH = 80
COLUMN = 37
"""Width of each side of a side-by-side block: 2 + 37 + 3 + 37 = 79 columns."""

DEFAULT_MAX_PROMPTS = 10
"""Prompts shown in full in text and Markdown reports; the JSON report has them all."""


def paragraph(text: str, indent: str = "  ") -> list[str]:
    """``text`` (unescaped: it may hold what a trace or report file said) escaped and wrapped."""
    return textwrap.wrap(escape(text), WIDTH - 1, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False) or [""]


def tier_word(value: bool | None) -> str:
    return "n/a" if value is None else ("pass" if value else "FAIL")


def describe(info: TraceInfo) -> str:
    sampling = "sampling" if info.do_sample else "greedy"
    logprobs = "no logprobs" if info.logprobs == "none" else f"{info.logprobs} logprobs, top-{info.top_k}"
    parts = [info.backend, info.model, info.dtype, info.device, f"batch {info.batch_size}", sampling, logprobs,
             count(info.rows, "row")]
    if not info.complete:
        parts.append("INCOMPLETE")
    return " | ".join(parts)


def value_raw(value: object, absent: bool) -> str:
    """A setting's value as a trace has it, unescaped: strings as they are, others as JSON."""
    if absent:
        return "(absent)"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def value_text(value: object, absent: bool) -> str:
    return escape(value_raw(value, absent))


def setup_lines(differences: list[HeaderDifference], attribution_cause: str, attribution_text: str) -> list[str]:
    lines = []
    counted = sum(d.category not in ("ignored", "recording") for d in differences)
    lines.append(f"Setup differences ({counted} counted, {len(differences) - counted} not counted)")
    if differences:
        lines.append(f"  {pad('field', 24)} {pad('left', 20)} {pad('right', 20)} kind")
        for d in differences:
            left = clip(value_text(d.left, d.absent == "left"), 20)
            right = clip(value_text(d.right, d.absent == "right"), 20)
            field = clip(escape(d.field), WIDTH - 4)
            if len(field) > 24:  # a long field name gets a line of its own
                lines.append(f"  {field}")
                field = ""
            lines.append(f"  {pad(field, 24)} {pad(left, 20)} {pad(right, 20)} {d.category}")
    lines.extend(paragraph(f"Attribution: {attribution_cause}. {attribution_text}"))
    return lines


def _positions(report: DiffReport) -> str:
    positions = report.summary.divergence_positions
    shown = ", ".join(f"{p.index} ({p.count})" for p in positions[:8])
    return shown + (f", ... ({len(positions) - 8} more positions)" if len(positions) > 8 else "")


def count_lines(report: DiffReport) -> list[str]:
    s = report.summary
    statuses = [(k, v) for k, v in s.statuses.items() if v]
    classes = [(k, v) for k, v in s.classifications.items() if v]
    lines = [f"Prompts: {s.compared} compared ({s.left_rows} rows left, {s.right_rows} right)"]
    lines.append(f"  {pad('status', 18)} {'prompts':>7}    {pad('classification', 20)} {'prompts':>7}")
    for i in range(max(len(statuses), len(classes))):
        a = f"{pad(statuses[i][0], 18)} {statuses[i][1]:>7}" if i < len(statuses) else pad("", 26)
        b = f"{pad(classes[i][0], 20)} {classes[i][1]:>7}" if i < len(classes) else ""
        lines.append(f"  {a}    {b}".rstrip())
    if s.divergence_positions:
        lines.append(f"  First divergent token (prompts): {_positions(report)}")
    return lines


def _token_line(side: Side) -> str:
    if side.token is None:
        return f"(stopped after {count(side.length, 'token')}: {escape(side.finish_reason)})"
    return f"{token(side.token)} (id {side.token.id})"


def lp(value: float | None) -> str:
    """A logprob with the digits a near tie needs."""
    return "n/a" if value is None else f"{value:.8g}"


def _continuation(side: Side) -> list[str]:
    if side.token is None:
        return []
    return wrap('continues "' + tokens_text(side.continuation) + '"', COLUMN, 3)


def _top_lines(side: Side) -> list[str]:
    return [
        f"{rank:>2} {pad(clip(token(e), 14), 14)} {e.id:>6} {e.logprob:>12.8g}"
        for rank, e in enumerate(side.top, start=1)
    ]


def _rank_line(name: str, other: str, side: Side, k: int) -> str | None:
    if side.token is None:
        return None
    if side.rank_in_other is None:
        return f"  {name}'s {clip(token(side.token), 20)} is not in {other}'s top-{k}"
    return (
        f"  {name}'s {clip(token(side.token), 20)} is #{side.rank_in_other} in {other}'s top-{k} "
        f"(logprob {lp(side.other_logprob)} there)"
    )


def divergence_title(result: PromptResult) -> str:
    d = result.divergence
    assert d is not None
    return (
        f'Prompt "{escape(result.prompt_id)}": {result.classification} at token {d.index} '
        f"(left {count(d.left.length, 'token')}, right {d.right.length})"
    )


def divergence_lines(result: PromptResult, factor: float, k: int) -> list[str]:
    """The side-by-side account of one prompt's first divergence, below its title."""
    d: Divergence | None = result.divergence
    assert d is not None
    lines: list[str] = []
    if d.context:
        start = "..." if d.context_start > 0 else ""
        text = tokens_text(d.context)
        shown = clip(text, WIDTH - 16, left=True)
        if shown != text:
            start, shown = "...", shown[3:]
        lines.append(f'  context  {start}"{shown}"')
    lines.extend(columns(["left"], ["right"], COLUMN))
    lines.extend(columns([_token_line(d.left)], [_token_line(d.right)], COLUMN))
    if d.left.logprob is not None or d.right.logprob is not None:
        shown = [f"logprob {lp(s.logprob)}" if s.logprob is not None else "" for s in (d.left, d.right)]
        lines.extend(columns([shown[0]], [shown[1]], COLUMN))
    lines.extend(columns(_continuation(d.left), _continuation(d.right), COLUMN))
    if d.left.top or d.right.top:
        lines.append(f"  top-{k} at token {d.index}")
        lines.extend(columns(_top_lines(d.left), _top_lines(d.right), COLUMN))
        for line in (_rank_line("left", "right", d.left, k), _rank_line("right", "left", d.right, k)):
            if line is not None:
                lines.append(line)
        if d.left.margin is not None or d.right.margin is not None:
            lines.append(f"  top1-top2 margin: left {num(d.left.margin)}, right {num(d.right.margin)}")
    lines.extend(drift_lines(result, f"the {count(d.index, 'token')} before"))
    if result.evidence is not None:
        e = result.evidence
        if e.gap is not None and e.tolerance is not None:
            relation = "<=" if e.gap <= e.tolerance else ">"
            bound = "at least " if e.gap_is_bound else ""
            lines.append(
                f"  gap {bound}{num(e.gap)} {relation} tolerance {num(e.tolerance)} "
                f"({factor:g} x noise {num(e.noise)} from the {e.noise_source})"
            )
        lines.extend(paragraph(e.reason))
    for note in result.notes:
        lines.extend(paragraph("Note: " + note))
    return lines


def drift_lines(result: PromptResult, over: str) -> list[str]:
    drift = result.drift
    if drift is None:
        return []
    if drift.compared == 0:
        return ["  drift: none measured, no tokens precede the divergence"]
    if drift.first_index is None:
        text = f"  drift over {over}: none, the logprobs agree bit for bit"
    else:
        text = (
            f"  drift over {over}: first at token {drift.first_index}, max |d| {num(drift.max_abs)} "
            f"(token {drift.max_index}), RMS {num(drift.rms)}"
        )
    lines = paragraph(text.strip(), "  ")
    if drift.top_first_index is not None and result.status == "logprobs_differ" and drift.first_index is None:
        lines.append(f"  the top-k alternatives first differ at token {drift.top_first_index}")
    return lines


def input_lines(result: PromptResult) -> list[str]:
    assert result.inputs is not None
    lines = [f'Prompt "{escape(result.prompt_id)}": input_mismatch']
    if result.evidence is not None:
        lines.extend(paragraph(result.evidence.reason))
    for note in result.notes:
        lines.extend(paragraph("Note: " + note))
    return lines


def collect_prompts(report: DiffReport, limit: int) -> tuple[list[PromptResult], list[PromptResult], list[PromptResult]]:
    """The first ``limit`` prompts of each kind, reading no further than needed."""
    detailed: list[PromptResult] = []
    drifted: list[PromptResult] = []
    unmatched: list[PromptResult] = []
    s = report.summary.statuses
    wanted = (
        min(limit, s["tokens_diverge"] + s["stopped_early"] + s["inputs_differ"]),
        min(limit, s["logprobs_differ"]),
        min(limit * 4, s["left_only"] + s["right_only"]),
    )
    if not any(wanted):
        return detailed, drifted, unmatched
    for result in report.prompts:
        if result.status in ("tokens_diverge", "stopped_early", "inputs_differ"):
            if len(detailed) < wanted[0]:
                detailed.append(result)
        elif result.status == "logprobs_differ":
            if len(drifted) < wanted[1]:
                drifted.append(result)
        elif result.status in ("left_only", "right_only"):
            if len(unmatched) < wanted[2]:
                unmatched.append(result)
        if (len(detailed), len(drifted), len(unmatched)) == wanted:
            break
    return detailed, drifted, unmatched


def render_diff_text(report: DiffReport, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    return "\n".join(_diff_lines(report, max_prompts)) + "\n"


def _diff_lines(report: DiffReport, max_prompts: int) -> Iterator[str]:
    v = report.verdict
    yield f"detllm diff: {v.classification}"
    yield (
        f"Tier 1: {tier_word(v.tier1)}   Tier 2: {tier_word(v.tier2)}   "
        f"exit status {report.exit_code()} (judged at Tier {report.options.tier})"
    )
    yield ""
    for label, info in (("left", report.left), ("right", report.right)):
        yield f"  {label:<6} {clip(escape(info.path), WIDTH - 10, left=True)}"
        yield from paragraph(describe(info), "         ")
    yield ""
    yield from paragraph(v.text, "")
    for note in report.notes:
        yield from paragraph("Note: " + note, "")
    yield ""
    yield from setup_lines(report.setup.differences, report.setup.attribution.cause, report.setup.attribution.text)
    yield ""
    yield from count_lines(report)
    detailed, drifted, unmatched = collect_prompts(report, max_prompts)
    statuses = report.summary.statuses
    for result in detailed:
        yield ""
        if result.divergence is not None:
            k = min(report.left.top_k, report.right.top_k)
            yield divergence_title(result)
            yield from divergence_lines(result, report.options.near_tie_factor, k)
        else:
            yield from input_lines(result)
    shown_total = statuses["tokens_diverge"] + statuses["stopped_early"] + statuses["inputs_differ"]
    if shown_total > len(detailed):
        yield ""
        yield f"... and {shown_total - len(detailed)} more diverging prompts (all are in the JSON report)"
    if drifted:
        yield ""
        yield f"Tokens equal, logprobs differ ({count(statuses['logprobs_differ'], 'prompt')})"
        for result in drifted:
            yield "  " + pad(clip(escape(result.prompt_id), 16), 16) + " " + drift_summary(result)
        if statuses["logprobs_differ"] > len(drifted):
            yield f"  ... and {statuses['logprobs_differ'] - len(drifted)} more"
    if unmatched:
        yield ""
        for side in ("left", "right"):
            ids = [r.prompt_id for r in unmatched if r.status == f"{side}_only"]
            total = statuses[f"{side}_only"]
            if total:
                more = f", ... ({total - len(ids)} more)" if total > len(ids) else ""
                yield from paragraph(f"Only in the {side} trace ({total}): " + ", ".join(ids) + more, "")


def drift_summary(result: PromptResult, *, short: bool = False) -> str:
    """One line on a prompt whose tokens agree and logprobs do not (``short``: fewer numbers)."""
    drift = result.drift
    if drift is None:
        return ""
    if drift.first_index is None:
        return f"top-k first differs at token {drift.top_first_index}"
    if short:
        return f"first at token {drift.first_index}, max |d| {num(drift.max_abs)}"
    return (
        f"first at token {drift.first_index}, max |d| {num(drift.max_abs)} (token {drift.max_index}), "
        f"RMS {num(drift.rms)}"
    )

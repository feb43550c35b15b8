"""Text, Markdown and HTML for a check's engine-setting sweep: one row per variant and trace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .._escape import html as esc
from ._markdown import cell, code
from ..diff.model import SweepComparison, SweepReport, SweepVariant
from ._text import WIDTH, paragraph, tier_word
from .._text_util import clip, escape, pad

STATUS_WORDS = {"run": "run", "baseline": "baseline", "not_run": "NOT RUN", "not_applied": "NOT APPLIED"}


def _code(text: str) -> str:
    """Inline code for a string from a trace, an engine or a settings file: control characters escaped."""
    return code(text)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _logprobs(c: SweepComparison) -> str:
    return "n/a" if c.logprobs_stable is None else f"{c.logprobs_stable}/{c.prompts}"


def _divergent(c: SweepComparison, limit: int = 4) -> str:
    if not c.divergent:
        return "none"
    shown = ", ".join(c.divergent[:limit])
    more = f" +{len(c.divergent) - limit}" if len(c.divergent) > limit else ""
    return f"{len(c.divergent)}: {shown}{more}"


def _rows(variant: SweepVariant) -> list[tuple[str, SweepComparison | None]]:
    """(label, comparison) per trace of the variant; one row without a comparison when none ran."""
    if not variant.comparisons:
        return [(variant.name, None)]
    if len(variant.comparisons) == 1:
        return [(variant.name, variant.comparisons[0])]
    return [(f"{variant.name} ({c.role})", c) for c in variant.comparisons]


def _spread(variant: SweepVariant) -> Iterator[tuple[str, str]]:
    """(label, note) for each trace of the variant whose engine started a batch's prompts in turn."""
    for label, c in _rows(variant):
        if c is not None and c.scheduled_steps is not None:
            yield label, (
                f"a batch was spread over up to {c.scheduled_steps} engine steps: its prompts were first "
                "scheduled in turn, not together (chunked prefill under a token budget per step), so the "
                "variant also changed which sequences ran in the same step"
            )


def _applied(variant: SweepVariant) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in variant.applied.items())


def sweep_text(sweep: SweepReport, tier: int) -> Iterator[str]:
    yield ""
    yield f"Sweep ({sweep.mode}; each variant against the baseline {escape(sweep.baseline)}): {tier_word(sweep.verdict.stable)}"
    yield f"  {pad('setting=value', 34)} {pad('status', 11)} {'tokens':>7} {'logprobs':>8}  {pad('divergent prompts', 20)} classification"
    for variant in sweep.variants:
        for label, c in _rows(variant):
            status = STATUS_WORDS[variant.status]
            name = pad(clip(escape(label), 34), 34)
            if c is None:
                yield f"  {name} {pad(status, 11)} {'-':>7} {'-':>8}  {pad('-', 20)} -"
            else:
                tokens = f"{c.tokens_stable}/{c.prompts}"
                divergent = pad(clip(escape(_divergent(c)), 20), 20)
                yield f"  {name} {pad(status, 11)} {tokens:>7} {_logprobs(c):>8}  {divergent} {c.classification}"
    yield "  (tokens, logprobs: prompts equal to the baseline's; logprobs among all prompts)"
    for variant in sweep.variants:
        if variant.reason and variant.status != "baseline":
            yield from paragraph(f"{variant.name}: {STATUS_WORDS[variant.status].lower()}: {variant.reason}")
        if variant.applied:
            where = "in a fresh process" if variant.fresh_process else "in the check's process"
            yield from paragraph(f"{variant.name}: read back from the engine ({where}): {clip(_applied(variant), WIDTH * 3)}")
        if variant.prefix_cache is not None:
            yield from paragraph(f"{variant.name}: {variant.prefix_cache.text}")
        for label, note in _spread(variant):
            yield from paragraph(f"{label}: {note}")
    yield from paragraph(sweep.verdict.text, "")


def sweep_markdown(sweep: SweepReport, tier: int) -> Iterator[str]:
    yield f"**Sweep** ({sweep.mode}; each variant against the baseline {_code(sweep.baseline)}): {tier_word(sweep.verdict.stable)}"
    yield ""
    yield "| setting=value | status | tokens stable | logprobs stable | divergent prompts | classification |"
    yield "|---|---|---:|---:|---|---|"
    for variant in sweep.variants:
        for label, c in _rows(variant):
            status = STATUS_WORDS[variant.status]
            if c is None:
                yield f"| {_code(label)} | {status} | - | - | - | - |"
            else:
                divergent = ", ".join(_code(p) for p in c.divergent[:8]) or "none"
                if len(c.divergent) > 8:
                    divergent += f" and {len(c.divergent) - 8} more"
                yield (
                    f"| {_code(label)} | {status} | {c.tokens_stable}/{c.prompts} | {_logprobs(c)} | "
                    f"{divergent} | `{c.classification}` |"
                )
    yield ""
    for variant in sweep.variants:
        if variant.reason and variant.status != "baseline":
            yield f"- {_code(variant.name)}: {STATUS_WORDS[variant.status].lower()}: {cell(variant.reason)}"
        if variant.applied:
            yield f"- {_code(variant.name)}: read back from the engine: {_code(_applied(variant))}"
        if variant.prefix_cache is not None:
            yield f"- {_code(variant.name)}: {cell(variant.prefix_cache.text)}"
        for label, note in _spread(variant):
            yield f"- {_code(label)}: {cell(note)}"
    yield ""
    yield cell(sweep.verdict.text)
    yield ""


def sweep_html(sweep: SweepReport, tier: int) -> Iterator[str]:
    from ._html import table

    yield '<h2 id="sweep">Engine settings</h2>'
    yield (f"<p>{esc(sweep.mode)}; each variant against the baseline <code>{esc(sweep.baseline)}</code>: "
           f'<b id="sweep-answer">{esc(tier_word(sweep.verdict.stable))}</b></p>')
    rows = []
    for variant in sweep.variants:
        for label, c in _rows(variant):
            status = esc(STATUS_WORDS[variant.status])
            if c is None:
                rows.append([f"<code>{esc(label)}</code>", status, "-", "-", "-", "-"])
                continue
            divergent = ", ".join(f"<code>{esc(p)}</code>" for p in c.divergent[:20]) or "none"
            if len(c.divergent) > 20:
                divergent += esc(f" and {len(c.divergent) - 20} more")
            rows.append([f"<code>{esc(label)}</code>", status, esc(f"{c.tokens_stable}/{c.prompts}"), esc(_logprobs(c)),
                         divergent, f"<code>{esc(c.classification)}</code>"])
    yield table(["setting=value", "status", "tokens stable", "logprobs stable", "divergent prompts", "classification"],
                rows, cls="sweep", numeric=(2, 3))
    notes = []
    for variant in sweep.variants:
        if variant.reason and variant.status != "baseline":
            notes.append(f"{variant.name}: {STATUS_WORDS[variant.status].lower()}: {variant.reason}")
        if variant.applied:
            where = "in a fresh process" if variant.fresh_process else "in the check's process"
            notes.append(f"{variant.name}: read back from the engine ({where}): {_applied(variant)}")
        if variant.prefix_cache is not None:
            notes.append(f"{variant.name}: {variant.prefix_cache.text}")
        notes.extend(f"{label}: {note}" for label, note in _spread(variant))
    if notes:
        yield "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
    yield f'<p id="sweep-text">{esc(sweep.verdict.text)}</p>'

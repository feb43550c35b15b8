"""Text, Markdown and HTML of a server check's concurrency answer."""

from __future__ import annotations

from collections.abc import Iterator

from .._escape import html as esc
from .._numbers import percent
from ..diff.model import ConcurrencyAnswer
from ._markdown import cell, code
from .._text_util import clip, escape, pad


def _minority(m: object) -> str:
    levels = ", ".join(str(level) for level in m.levels)  # type: ignore[attr-defined]
    where = "no divergence" if m.first_divergence is None else f"at token {m.first_divergence}"  # type: ignore[attr-defined]
    return f"{len(m.runs)} run(s) at {levels} in flight: {m.classification} {where}"  # type: ignore[attr-defined]


def concurrency_text(answer: ConcurrencyAnswer, max_prompts: int) -> Iterator[str]:
    yield "Requests in flight (odd one out: other tokens than the prompt's reference, its most common completion at the lowest level)"
    yield f"  {'in flight':>9}  {'odd':>5} {'of':>6}  {'rate':>6}  {pad('95% interval', 15)} prompts changed"
    for r in answer.levels:
        interval = f"{percent(r.low)}-{percent(r.high)}"
        yield f"  {r.concurrency:>9}  {r.odd:>5} {r.completions:>6}  {percent(r.rate):>6}  {pad(interval, 15)} {r.prompts_changed}"
    for p in answer.prompts[:max_prompts]:
        yield f"  {clip(escape(p.prompt_id), 24)}: {p.completions} completions, reference {p.reference_runs} of {p.runs} runs"
        for m in p.minorities[:4]:
            yield f"    {_minority(m)}"
    if len(answer.prompts) > max_prompts:
        yield f"  ... and {len(answer.prompts) - max_prompts} more prompts (all are in the JSON report)"


def concurrency_markdown(answer: ConcurrencyAnswer, max_prompts: int) -> Iterator[str]:
    yield "| in flight | odd one out | of | rate | 95% interval | prompts changed |"
    yield "|---:|---:|---:|---:|---|---:|"
    for r in answer.levels:
        yield f"| {r.concurrency} | {r.odd} | {r.completions} | {percent(r.rate)} | {percent(r.low)}-{percent(r.high)} | {r.prompts_changed} |"
    yield ""
    if answer.prompts:
        yield "| prompt | completions | reference | others |"
        yield "|---|---:|---:|---|"
        for p in answer.prompts[:max_prompts]:
            minorities = "; ".join(_minority(m) for m in p.minorities[:4])
            yield f"| {code(p.prompt_id)} | {p.completions} | {p.reference_runs} of {p.runs} | {cell(minorities)} |"
        yield ""


MAX_HTML_PROMPTS = 200
"""Prompts with more than one completion listed on the HTML page; the JSON report has all."""


def concurrency_html(answer: ConcurrencyAnswer) -> Iterator[str]:
    from ._html import table

    yield '<h2 id="concurrency">Requests in flight</h2>'
    yield (f'<p id="concurrency-text">{esc(answer.text)}</p>'
           "<p>Odd one out: a completion with other tokens than its prompt's reference, the prompt's most common "
           "completion at the lowest level; the interval is the 95% Wilson interval of the rate.</p>")
    rows = ([str(r.concurrency), str(r.odd), str(r.completions), esc(percent(r.rate)),
             esc(f"{percent(r.low)}-{percent(r.high)}"), str(r.prompts_changed)] for r in answer.levels)
    yield table(["in flight", "odd one out", "of", "rate", "95% interval", "prompts changed"], rows,
                cls="concurrency", numeric=(0, 1, 2, 3, 5))
    if answer.prompts:
        shown = answer.prompts[:MAX_HTML_PROMPTS]
        yield table(["prompt", "completions", "reference", "others"],
                    ([f"<code>{esc(p.prompt_id)}</code>", str(p.completions), esc(f"{p.reference_runs} of {p.runs}"),
                      "<br>".join(esc(_minority(m)) for m in p.minorities)] for p in shown),
                    cls="concurrency-prompts", numeric=(1, 2))
        if len(answer.prompts) > len(shown):
            yield f'<p class="note">... and {len(answer.prompts) - len(shown)} more prompts (all are in the JSON report)</p>'

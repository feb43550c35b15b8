"""Text and Markdown of a server check's concurrency answer."""

from __future__ import annotations

from collections.abc import Iterator

from ._concurrency import ConcurrencyAnswer, percent
from ._markdown import cell, code
from ._text_util import clip, escape, pad


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

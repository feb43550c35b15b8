"""Text and Markdown for a bisect: the differences, the ranking and its evidence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..diff.model import BisectDocument, BisectRun
from ._markdown import cell, code
from ._text import paragraph
from .._text_util import clip, escape, pad


def _code(text: str) -> str:
    """Inline code for a string from a trace, an engine or a settings file: control characters escaped."""
    return code(text)


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _evidence(r: BisectRun) -> str:
    if r.outcome == "not_run":
        return f"not run: {r.reason}"
    extra = f", {r.extra} other prompts diverge" if r.extra else ""
    return f"{r.reproduced} of {r.of} diverging prompts reproduced{extra}"


def render_bisect_text(document: BisectDocument, *, max_prompts: int | None = None) -> str:
    """The bisect for a terminal. Every rerun is listed: ``max_prompts`` (the common signature
    of the renderers) limits nothing here."""
    return "\n".join(_text(document)) + "\n"


def _text(d: BisectDocument) -> Iterator[str]:
    explained = ", ".join(d.verdict.explained_by) if d.verdict.explained_by else "not found"
    yield f"detllm bisect: {escape(explained)}"
    yield f"  A  {escape(d.left.trace)}"
    yield f"  B  {escape(d.right.trace)}"
    yield f"  A and B: {len(d.observed.divergent)} of {d.observed.prompts} prompts diverge ({d.observed.classification}; judged at Tier {d.options.tier})"
    yield ""
    yield from paragraph(d.verdict.text, "")
    yield ""
    yield f"Settings that differ ({len(d.differences)})"
    yield f"  {pad('setting', 26)} {pad('A', 24)} B"
    for diff in d.differences:
        yield f"  {pad(clip(escape(diff.setting), 26), 26)} {pad(clip(escape(_value(diff.left)), 24), 24)} {clip(escape(_value(diff.right)), 26)}"
    runs = ([d.control] if d.control is not None else []) + d.ranking
    if runs:
        yield ""
        yield "Reruns of A with B's settings, best explanation first (the control first)"
        yield f"  {pad('applied from B', 34)} {pad('outcome', 11)} {'reproduced':>10} {'extra':>5}  classification"
        for r in runs:
            reproduced = f"{r.reproduced}/{r.of}" if r.outcome != "not_run" else "-"
            yield (
                f"  {pad(clip(escape(r.name), 34), 34)} {pad(r.outcome, 11)} {reproduced:>10} {r.extra:>5}  "
                f"{r.classification or '-'}"
            )
        for r in runs:
            if r.outcome == "not_run":
                yield from paragraph(f"{r.name}: {_evidence(r)}")
    yield ""
    yield f"Budget: {d.budget.used} of {d.budget.max_runs} runs used" + (
        f"; not tried: {escape(', '.join(d.budget.untried))}" if d.budget.untried else ""
    )


def render_bisect_markdown(document: BisectDocument, *, max_prompts: int | None = None) -> str:
    """The bisect in Markdown; every rerun is listed, as in :func:`render_bisect_text`."""
    return "\n".join(_markdown(document)).rstrip("\n") + "\n"


def _markdown(d: BisectDocument) -> Iterator[str]:
    explained = ", ".join(_code(s) for s in d.verdict.explained_by) if d.verdict.explained_by else "not found"
    yield f"### detLLM bisect: {explained}"
    yield ""
    yield f"A: {_code(d.left.trace)} · B: {_code(d.right.trace)} · {len(d.observed.divergent)} of {d.observed.prompts} prompts diverge (`{d.observed.classification}`, Tier {d.options.tier})"
    yield ""
    yield cell(d.verdict.text)
    yield ""
    yield "| setting | A | B |"
    yield "|---|---|---|"
    for diff in d.differences:
        yield f"| {_code(diff.setting)} | {_code(_value(diff.left))} | {_code(_value(diff.right))} |"
    yield ""
    runs = ([d.control] if d.control is not None else []) + d.ranking
    if runs:
        yield "| applied from B | outcome | evidence | classification |"
        yield "|---|---|---|---|"
        for r in runs:
            yield f"| {_code(r.name)} | {r.outcome} | {cell(_evidence(r))} | {_code(r.classification) if r.classification else '-'} |"
        yield ""
    untried = f"; not tried: {', '.join(_code(u) for u in d.budget.untried)}" if d.budget.untried else ""
    yield f"Budget: {d.budget.used} of {d.budget.max_runs} runs used{untried}."


# -- HTML: the sections of a bisect page (see detllm.report._html.SECTIONS) -------------------


def _explained(d: BisectDocument) -> str:
    return ", ".join(d.verdict.explained_by) if d.verdict.explained_by else "not found"


def html_title(d: BisectDocument) -> str:
    return f"detLLM bisect: {_explained(d)}"


def html_verdict(d: BisectDocument, page: Any) -> Iterator[str]:
    from ._html import esc

    code = d.exit_code()
    banner = {0: "pass", 1: "fail"}.get(code, "trouble")
    yield f'<section id="verdict" class="banner {banner}" data-exit="{code}">'
    yield f'<h1>detLLM bisect: <code id="classification">{esc(_explained(d))}</code></h1>'
    yield (f"<p>A <code>{esc(d.left.trace)}</code> and B <code>{esc(d.right.trace)}</code>: "
           f"{len(d.observed.divergent)} of {d.observed.prompts} prompts diverge "
           f"(<code>{esc(d.observed.classification)}</code>; judged at Tier {d.options.tier}).</p>")
    yield f'<p class="claim"><b>Exit status <span id="exit">{code}</span></b> (0: A and B agree; 1: they diverge)</p>'
    yield f'<p class="caveat" id="verdict-text">{esc(d.verdict.text)}</p>'
    yield "</section>"


def html_differences(d: BisectDocument, page: Any) -> Iterator[str]:
    from ._html import esc, table, value

    yield f'<h2 id="setup">Settings that differ ({len(d.differences)})</h2>'
    rows = [[f"<code>{esc(s.setting)}</code>", value(_value(s.left), False), value(_value(s.right), False)]
            for s in d.differences]
    yield table(["setting", "A", "B"], rows, cls="setup")


def html_runs(d: BisectDocument, page: Any) -> Iterator[str]:
    from ._html import esc, table

    runs = ([d.control] if d.control is not None else []) + d.ranking
    yield '<h2 id="reruns">Reruns of A with B\'s settings</h2>'
    if not runs:
        yield "<p>Nothing was rerun.</p>"
    else:
        yield "<p>Best explanation first; the control (A's own settings rerun) first of all.</p>"
        rows = [[f"<code>{esc(r.name)}</code>", esc(r.outcome), esc(_evidence(r)),
                 "-" if r.classification is None else f"<code>{esc(r.classification)}</code>"] for r in runs]
        yield table(["applied from B", "outcome", "evidence", "classification"], rows, cls="reruns")
    untried = f"; not tried: {esc(', '.join(d.budget.untried))}" if d.budget.untried else ""
    yield f'<p id="budget">Budget: {d.budget.used} of {d.budget.max_runs} runs used{untried}.</p>'

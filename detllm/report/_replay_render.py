"""Text and Markdown for a replay comparison: the drift over every position, and where tokens would flip.

Every string that came from a trace (paths, prompt ids, token texts, setting values)
goes through :mod:`detllm._escape`: ``escape`` for the terminal, ``cell``/``code`` for Markdown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..diff.model import Flip, ReplayDocument, ReplaySide, Statistics
from ._markdown import cell, code
from ._text import paragraph
from .._text_util import escape

MAX_FLIPS = 50
"""Would-flip positions listed in text and Markdown (JSON has them all)."""


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _share(agree: int, of: int) -> str:
    return f"{agree} of {of}" + (f" ({100 * agree / of:.1f}%)" if of else "")


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _tok(token: int, text: str | None) -> str:
    """A token for the terminal: its text in quotes, or ``<id>``."""
    return f"<{token}>" if text is None else '"' + escape(text).replace('"', '\\"') + '"'


def _side_text(side: ReplaySide) -> str:
    return (
        f"{escape(side.path)} ({escape(side.backend)}, {escape(side.model)}, {escape(side.dtype)}, "
        f"{escape(side.device)}, batch {side.batch_size})"
    )


def _title(d: ReplayDocument) -> str:
    s = d.summary
    kind = "baseline replay (same setup)" if d.verdict.baseline else "replay under another setup"
    if s.would_flip:
        return f"{kind}: {s.would_flip} of {s.positions} recorded tokens would flip"
    return f"{kind}: every recorded token is rank 1 ({s.positions} positions)"


def _drift_label(d: ReplayDocument) -> str:
    if d.verdict.baseline:
        return "prefill/decode baseline (same setup: the noise floor, not a setup difference)"
    return "drift (setup difference plus the prefill/decode baseline)"


def _figures(s: Statistics) -> list[tuple[str, str]]:
    return [
        ("|Δ logprob| of the recorded token", f"max {_g(s.max_abs_delta)}, mean {_g(s.mean_abs_delta)} over {s.compared} positions"),
        ("KL(original || replay), top-k estimate", f"mean {_g(s.kl_mean)}, max {_g(s.kl_max)} (a lower bound)"),
        ("original's mass outside the known tokens", f"mean {_g(s.missing_mass_mean)}, max {_g(s.missing_mass_max)}"),
        ("total variation, bounds", f"mean in [{_g(s.tv_low_mean)}, {_g(s.tv_high_mean)}]"),
        ("top-1 agrees", _share(s.top1_agree, s.top1_compared) + " positions"),
        ("would flip", f"{s.would_flip} positions"),
    ]


def _flips(d: ReplayDocument) -> Iterator[tuple[str, Flip]]:
    for prompt in d.prompts:
        for flip in prompt.flips:
            yield prompt.prompt_id, flip


def render_replay_text(d: ReplayDocument, *, max_prompts: int = 20) -> str:
    return "\n".join(_text(d, max_prompts)) + "\n"


def _text(d: ReplayDocument, max_prompts: int) -> Iterator[str]:
    yield f"detllm diff: {_title(d)}"
    yield f"  original  {_side_text(d.original)}"
    yield f"  replay    {_side_text(d.replay)}"
    for diff in d.setup:
        yield f"  setup: {escape(diff.field)}: {escape(_value(diff.original))} -> {escape(_value(diff.replay))}"
    yield ""
    yield from paragraph(d.verdict.text, "")
    for note in d.notes:
        yield from paragraph(f"Note: {note}", "")
    yield ""
    yield f"Over all {d.summary.positions} positions: {_drift_label(d)}"
    for name, value in _figures(d.summary):
        yield f"  {name:<42} {value}"
    flips = list(_flips(d))
    if flips:
        yield ""
        yield "Would flip here (the recorded token is not the replay's greedy choice; margin = replay top-1 minus recorded, under the replay)"
        for prompt_id, f in flips[:MAX_FLIPS]:
            rank = f"rank {f.rank}" if f.rank is not None else "rank unknown"
            yield (
                f"  {escape(prompt_id)} @{f.index}: {_tok(f.token, f.token_text)} {rank}, replay prefers "
                f"{_tok(f.replay_top1, f.replay_top1_text)} by {f.margin:.4g}"
                + (f" (recorded token: {f.logprob_original:.4g} in the original, {f.logprob_replay:.4g} in the replay)" if f.logprob_original is not None else "")
            )
        if len(flips) > MAX_FLIPS:
            yield f"  ... and {len(flips) - MAX_FLIPS} more (see --json)"
    if d.prompts:
        yield ""
        yield "Per prompt"
        yield f"  {'prompt':<16} {'positions':>9} {'max |Δ|':>9} {'mean |Δ|':>9} {'KL mean':>9} {'top-1':>7} {'flips':>5}"
        for p in d.prompts[:max_prompts]:
            s = p.statistics
            top1 = f"{s.top1_agree}/{s.top1_compared}"
            yield (
                f"  {escape(p.prompt_id):<16} {s.positions:>9} {_g(s.max_abs_delta):>9} {_g(s.mean_abs_delta):>9} "
                f"{_g(s.kl_mean):>9} {top1:>7} {s.would_flip:>5}"
            )
        if len(d.prompts) > max_prompts:
            yield f"  ... and {len(d.prompts) - max_prompts} more prompts (see --json)"


def render_replay_markdown(d: ReplayDocument, *, max_prompts: int = 20) -> str:
    return "\n".join(_markdown(d, max_prompts)).rstrip("\n") + "\n"


def _md_tok(token: int, text: str | None) -> str:
    return f"`<{token}>`" if text is None else code(text)


def _markdown(d: ReplayDocument, max_prompts: int) -> Iterator[str]:
    yield f"### detLLM replay: {_title(d)}"
    yield ""
    yield "| | trace | backend | model | dtype | device | batch |"
    yield "|---|---|---|---|---|---|---|"
    for name, side in (("original", d.original), ("replay", d.replay)):
        yield (
            f"| {name} | {code(side.path)} | {code(side.backend)} | {code(side.model)} | {code(side.dtype)} | "
            f"{code(side.device)} | {side.batch_size} |"
        )
    yield ""
    if d.setup:
        yield "| setting | original | replay |"
        yield "|---|---|---|"
        for diff in d.setup:
            yield f"| {code(diff.field)} | {code(_value(diff.original))} | {code(_value(diff.replay))} |"
        yield ""
    yield cell(d.verdict.text)
    yield ""
    for note in d.notes:
        yield f"Note: {cell(note)}"
        yield ""
    yield f"**Over all {d.summary.positions} positions: {cell(_drift_label(d))}**"
    yield ""
    yield "| figure | value |"
    yield "|---|---|"
    for name, value in _figures(d.summary):
        yield f"| {cell(name)} | {cell(value)} |"
    flips = list(_flips(d))
    if flips:
        yield ""
        yield "**Would flip here** (margin = replay top-1 minus recorded token, both under the replay)"
        yield ""
        yield "| prompt | position | recorded | rank | replay's choice | margin |"
        yield "|---|---|---|---|---|---|"
        for prompt_id, f in flips[:MAX_FLIPS]:
            rank = str(f.rank) if f.rank is not None else "?"
            yield (
                f"| {code(prompt_id)} | {f.index} | {_md_tok(f.token, f.token_text)} | {rank} | "
                f"{_md_tok(f.replay_top1, f.replay_top1_text)} | {f.margin:.4g} |"
            )
        if len(flips) > MAX_FLIPS:
            yield ""
            yield f"... and {len(flips) - MAX_FLIPS} more (see the JSON report)."
    if d.prompts:
        yield ""
        yield "| prompt | positions | max \\|Δ\\| | mean \\|Δ\\| | KL mean | top-1 | flips |"
        yield "|---|---|---|---|---|---|---|"
        for p in d.prompts[:max_prompts]:
            s = p.statistics
            yield (
                f"| {code(p.prompt_id)} | {s.positions} | {_g(s.max_abs_delta)} | {_g(s.mean_abs_delta)} | "
                f"{_g(s.kl_mean)} | {s.top1_agree}/{s.top1_compared} | {s.would_flip} |"
            )
        if len(d.prompts) > max_prompts:
            yield ""
            yield f"... and {len(d.prompts) - max_prompts} more prompts (see the JSON report)."


# -- HTML: the sections of a replay page (see detllm.report._html.SECTIONS) -------------------


def _html_tok(token: int, text: str | None) -> str:
    from ._html import esc

    return f"<code>&lt;{token}&gt;</code>" if text is None else f"<code>&quot;{esc(text)}&quot;</code> ({token})"


def html_verdict(d: ReplayDocument, page: Any) -> Iterator[str]:
    from ._html import esc, state, tier_word

    code = d.exit_code()
    banner = "pass" if code == 0 else "fail"
    yield f'<section id="verdict" class="banner {banner}" data-exit="{code}" data-baseline="{str(d.verdict.baseline).lower()}">'
    yield f'<h1>detLLM replay: <span id="classification">{esc(_title(d))}</span></h1>'
    yield '<ul class="answers">'
    for name, answer in (("every recorded token rank 1", d.verdict.all_rank_1),):
        yield f'<li class="{state(answer)}" data-answer="{esc(name)}">{esc(name)}: {esc(tier_word(answer))}</li>'
    same = "the same setup (a baseline replay)" if d.verdict.baseline else "another setup"
    yield f'<li class="na" data-answer="setup">replayed under {esc(same)}</li>'
    yield "</ul>"
    yield f'<p class="claim"><b>Exit status <span id="exit">{code}</span></b> (0: no recorded token would flip)</p>'
    yield f'<p class="caveat" id="verdict-text">{esc(d.verdict.text)}</p>'
    for note in d.notes:
        yield f'<p class="note">Note: {esc(note)}</p>'
    yield "</section>"


def html_setup(d: ReplayDocument, page: Any) -> Iterator[str]:
    from ._html import esc, table, value

    def cells(side: ReplaySide) -> list[str]:
        return [
            f"<code>{esc(side.path)}</code>",
            "" if side.digest is None else f"<code>{esc(side.digest)}</code>",
            esc(f"{side.backend} / {side.model}"),
            esc(f"{side.dtype} / {side.device}"),
            str(side.batch_size),
            esc(f"{side.logprobs}, top-{side.top_k}"),
            str(side.rows),
        ]

    names = ["trace", "digest", "backend / model", "dtype / device", "batch size", "logprobs", "rows"]
    yield '<h2 id="setup">Setup</h2>'
    yield table(["", "original", "replay"], [[esc(n), a, b] for n, a, b in zip(names, cells(d.original), cells(d.replay))],
                cls="sides")
    yield f"<h3>Settings that differ ({len(d.setup)})</h3>"
    if d.setup:
        rows = [[f"<code>{esc(s.field)}</code>", value(_value(s.original), False), value(_value(s.replay), False)]
                for s in d.setup]
        yield table(["setting", "original", "replay"], rows, cls="setup")
    else:
        yield "<p>None: the replay ran under the original's own setup.</p>"


def html_figures(d: ReplayDocument, page: Any) -> Iterator[str]:
    from ._html import esc, table

    yield f'<h2 id="figures">Over all {d.summary.positions} positions</h2>'
    yield f"<p>{esc(_drift_label(d))}</p>"
    yield table(["figure", "value"], [[esc(name), esc(value)] for name, value in _figures(d.summary)], cls="figures")


def html_flips(d: ReplayDocument, page: Any) -> Iterator[str]:
    from ._html import esc, table, thin

    flips = list(_flips(d))
    yield f'<h2 id="flips">Would flip ({len(flips)})</h2>'
    if not flips:
        yield "<p>Every recorded token is the replay's greedy choice.</p>"
        return
    yield "<p>The recorded token is not the replay's greedy choice; margin = replay top-1 minus recorded, under the replay.</p>"
    rows = []
    for prompt_id, f in flips[:MAX_FLIPS]:
        rows.append([
            f"<code>{esc(prompt_id)}</code>", str(f.index), _html_tok(f.token, f.token_text),
            "?" if f.rank is None else str(f.rank), _html_tok(f.replay_top1, f.replay_top1_text), esc(f"{f.margin:.4g}"),
            "" if f.logprob_original is None else esc(f"{f.logprob_original:.4g}"), esc(f"{f.logprob_replay:.4g}"),
        ])
    yield table(["prompt", "position", "recorded", "rank", "replay's choice", "margin", "logprob, original",
                 "logprob, replay"], rows, cls="flips", numeric=(1, 3, 5, 6, 7))
    if len(flips) > MAX_FLIPS:
        yield thin(page, f"The first {MAX_FLIPS} of {len(flips)} would-flip positions are listed; all are in the JSON report.")


def html_prompts(d: ReplayDocument, page: Any) -> Iterator[str]:
    from ._html import MAX_TABLE_ROWS, esc, table, thin

    if not d.prompts:
        return
    yield f'<h2 id="prompts">Per prompt ({len(d.prompts)})</h2>'
    rows = []
    for p in d.prompts[:MAX_TABLE_ROWS]:
        s = p.statistics
        rows.append([f"<code>{esc(p.prompt_id)}</code>", str(s.positions), esc(_g(s.max_abs_delta)),
                     esc(_g(s.mean_abs_delta)), esc(_g(s.kl_mean)), f"{s.top1_agree}/{s.top1_compared}", str(s.would_flip)])
    yield table(["prompt", "positions", "max |Δ|", "mean |Δ|", "KL mean", "top-1", "flips"], rows, cls="prompts",
                numeric=(1, 2, 3, 4, 5, 6))
    if len(d.prompts) > MAX_TABLE_ROWS:
        yield thin(page, f"{len(d.prompts) - MAX_TABLE_ROWS} more prompts are in the JSON report.")


def html_title(d: ReplayDocument) -> str:
    return f"detLLM replay: {_title(d)}"

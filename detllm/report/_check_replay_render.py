"""Text, Markdown and HTML for a check's replay-backed verdicts (``check --replay``)."""

from __future__ import annotations

from collections.abc import Iterator

from .._escape import code
from .._escape import html as esc
from .._escape import markdown as cell
from .._escape import text as escape
from .._numbers import num
from ..diff.model import CheckReplay, ReplayMargin
from ._text import paragraph
from .._text_util import clip, pad

MAX_MARGINS = 40
"""Margins listed in text and Markdown; the JSON report has every one."""

VERDICT_WORDS = {"near_tie": "near tie (measured)", "flip_confirmed": "flip confirmed", "not_reproduced": "not reproduced"}


def _run_name(margin: ReplayMargin) -> str:
    return margin.right_setup.setup


def replay_text(replay: CheckReplay) -> Iterator[str]:
    yield ""
    yield "Replay-backed verdicts (teacher forcing at each first divergence)"
    yield from paragraph(replay.text)
    yield "  noise floor: each run replayed under its own setup, forced against decoded logprobs"
    for f in replay.floors:
        yield (f"    {pad(clip(escape(f.setup), 24), 24)} max {num(f.max_abs):>9}  mean {num(f.mean_abs):>9}  "
               f"over {f.compared} tokens, {f.rank1} at rank 1")
    if replay.margins:
        yield "  margin: run 0's token minus run N's, at the same prefix, under each setup"
        yield (f"    {pad('prompt', 16)} {pad('run N', 18)} {'step':>4}  {'under run 0':>11}  {'under run N':>11}  "
               f"{'inferred':>9}  verdict")
    for m in replay.margins[:MAX_MARGINS]:
        yield (f"    {pad(clip(escape(m.prompt_id), 16), 16)} {pad(clip(escape(_run_name(m)), 18), 18)} {m.index:>4}  "
               f"{num(m.left_setup.margin):>11}  {num(m.right_setup.margin):>11}  {num(m.inferred_left_lead):>9}  "
               f"{VERDICT_WORDS[m.verdict]} (was {escape(m.inferred)})")
    if len(replay.margins) > MAX_MARGINS:
        yield f"    ... and {len(replay.margins) - MAX_MARGINS} more (all are in the JSON report)"
    if replay.margins:
        yield "  (inferred: run 0's lead read off its own decoded top-k; every verdict here is replay-backed)"


def replay_markdown(replay: CheckReplay) -> Iterator[str]:
    yield "**Replay-backed verdicts** (teacher forcing at each first divergence)"
    yield ""
    yield cell(replay.text)
    yield ""
    yield "| noise floor: setup | max | mean | tokens | at rank 1 |"
    yield "|---|---:|---:|---:|---:|"
    for f in replay.floors:
        yield f"| {code(f.setup)} | {num(f.max_abs)} | {num(f.mean_abs)} | {f.compared} | {f.rank1} |"
    yield ""
    if replay.margins:
        yield "| prompt | run N | step | margin under run 0 | margin under run N | inferred lead | replay-backed verdict | inferred |"
        yield "|---|---|---:|---:|---:|---:|---|---|"
        for m in replay.margins[:MAX_MARGINS]:
            yield (f"| {code(m.prompt_id)} | {code(_run_name(m))} | {m.index} | {num(m.left_setup.margin)} | "
                   f"{num(m.right_setup.margin)} | {num(m.inferred_left_lead)} | {VERDICT_WORDS[m.verdict]} | {code(m.inferred)} |")
        if len(replay.margins) > MAX_MARGINS:
            yield f"| ... {len(replay.margins) - MAX_MARGINS} more | | | | | | | |"
        yield ""


def replay_html(replay: CheckReplay) -> Iterator[str]:
    yield '<h2 id="replay">Replay-backed verdicts</h2>'
    yield f"<p>{esc(replay.text)}</p>"
    yield '<table class="replay"><thead><tr><th>prompt</th><th>run N</th><th>step</th><th>margin under run 0</th>'
    yield "<th>margin under run N</th><th>tolerance</th><th>verdict</th></tr></thead><tbody>"
    for m in replay.margins[:MAX_MARGINS]:
        yield (f'<tr data-verdict="{esc(m.verdict)}"><td>{esc(m.prompt_id)}</td><td>{esc(_run_name(m))}</td>'
               f"<td>{m.index}</td><td>{esc(num(m.left_setup.margin))}</td><td>{esc(num(m.right_setup.margin))}</td>"
               f"<td>{esc(num(m.tolerance))}</td><td>{esc(VERDICT_WORDS[m.verdict])}</td></tr>")
    yield "</tbody></table>"

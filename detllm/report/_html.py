"""The HTML report: one self-contained page, readable offline and with scripts disabled.

Built from the same report models as text, JSON and Markdown; nothing here computes a
number the model does not hold. The page has no script, loads nothing (its
Content-Security-Policy forbids scripts and every fetch; the one inline style is
allowed by its hash) and escapes every string that came from a trace with
:func:`html_text`.

Sections are functions ``(report, page) -> Iterator[str]`` listed per report kind in
:data:`SECTIONS`, and :data:`TITLES` gives each kind's page title. A new kind of report
adds its own list (a replay's and a bisect's sections live beside their text and Markdown,
and load when first used); a report model that gains a part (the odd-one-out rate per concurrency
level with its interval, say) adds a function to its kind's list, where it belongs on
the page, using the helpers here (:func:`table`, :func:`html_text`, :class:`Page`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._numbers import num
from ..diff.model import DiffReport, PromptResult, Token, TopEntry
from ..diff.options import CHECK_FIELDS, comparison_arguments
from ._text import tier_word
from .. import _escape


html_text = _escape.html
"""``text`` safe in HTML element content and in quoted attributes (the one HTML escaping)."""

esc = html_text

MAX_GRID_ROWS = 300
"""Prompts drawn in the agreement grid; the others are counted, and the page says so."""
MAX_GRID_RUNS = 60
"""Runs drawn as grid columns."""
MAX_DETAILS = 50
"""Diverging prompts shown in full in an aggregate or check page (a diff page shows all)."""
MAX_TABLE_ROWS = 200
"""Rows of a plain table (setup differences, drifted prompts) before the rest is counted."""

CLAIMS = {"tier2": "Tier 2", "tier1": "Tier 1", "none": "none"}

POINTS_TO = {
    "setup": "a different setup (model, decoding, prompts)",
    "batch": "batch dependence",
    "backend": "the backend or its version",
    "determinism": "the determinism controls",
    "environment": "the machine or its software",
    "recording": "how the trace was recorded (not counted)",
    "ignored": "nothing (not counted)",
}
"""What a difference in a header field of each category would be consistent with."""

CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:1240px;padding:16px 20px 40px}
h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}
code,pre,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:12.5px}
p,li,td,th,code,h1,h2,h3,pre{overflow-wrap:anywhere}
table{border-collapse:collapse;margin:6px 0 10px;max-width:100%}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;overflow-wrap:normal}td.n{text-align:right;white-space:nowrap;overflow-wrap:normal}
table.sides td:first-child,table.settings td:first-child{white-space:nowrap}
.banner{border:2px solid;border-radius:8px;padding:12px 16px;margin:8px 0 16px}
.banner.pass{border-color:#1a7f37;background:#dafbe1}.banner.fail{border-color:#cf222e;background:#ffebe9}
.banner.trouble{border-color:#9a6700;background:#fff8c5}
.answers{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 8px;padding:0;list-style:none}
.answers li{border-radius:6px;padding:3px 10px;font-weight:600;background:#fff;border:1px solid var(--line)}
.answers .pass{color:#1a7f37}.answers .fail{color:#cf222e}.answers .na{color:var(--muted)}
.claim{margin:4px 0}.caveat{color:var(--muted);margin:4px 0 0}
.note{color:var(--muted);font-style:italic}
.gridwrap{overflow-x:auto;max-width:100%}
table.grid td,table.grid th{padding:1px 4px;font-size:11.5px;text-align:center;min-width:26px}
table.grid th.pid,table.grid td.pid{text-align:left;max-width:260px;font-family:ui-monospace,monospace;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.c-identical{background:#dafbe1}.c-logprob_drift{background:#fff1a8}.c-near_tie_flip{background:#ffb77c}
.c-decisive_flip{background:#ff8182;color:#000}.c-sampling_divergence{background:#d8b9ff}
.c-stop_divergence{background:#d4a373}.c-inconclusive{background:#d0d7de}.c-input_mismatch{background:#a40e26;color:#fff}
.c-unmatched{background:#24292f;color:#fff}.c-baseline{background:#ddf4ff}.c-missing{background:#fff;color:var(--muted)}
.legend{display:flex;flex-wrap:wrap;gap:6px;padding:0;list-style:none;font-size:12px}
.legend li{padding:1px 8px;border-radius:4px;border:1px solid var(--line)}
.repro{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.repro pre{white-space:pre-wrap;margin:6px 0;padding:8px;background:#fff;border:1px solid var(--line);border-radius:4px}
section.prompt{border-top:1px dashed var(--line);margin-top:18px}
.chart{display:block;max-width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:4px;margin:6px 0}
.chart .grid{stroke:#eaeef2}.chart .axis{stroke:#57606a}.chart .tick,.chart .legend,.chart .label{font:11px sans-serif;fill:#57606a}
.chart polyline.delta{fill:none;stroke:#0969da;stroke-width:2}.chart circle.delta,.chart .key.delta{fill:#0969da}
.chart .divergence{stroke:#cf222e;stroke-width:2;stroke-dasharray:4 3}.chart .key.divergence{fill:#cf222e}
.chart line.tolerance{stroke:#9a6700;stroke-dasharray:6 3}.chart .key.tolerance{fill:#9a6700}
.chart circle.left,.chart .key.left{fill:#8250df}.chart circle.right,.chart .key.right{fill:#1a7f37}
.chart rect.gap,.chart .key.gap{fill:#bc4c00}.chart .bar{fill:#0969da}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"""

_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src data:; script-src 'none'; "
    "base-uri 'none'; form-action 'none'"
)
"""Nothing may load or run: no scripts, no fetches; only the page's own style and data: images."""


@dataclass
class Page:
    """What every section needs besides the report: the reproduce command and the notes
    saying where the page summarises."""

    command: Sequence[str] | None = None
    thinned: list[str] = field(default_factory=list)


def table(head: Sequence[str] | None, rows: Iterable[Sequence[str]], *, cls: str = "", numeric: Sequence[int] = ()) -> str:
    """A table of cells already escaped; ``numeric`` columns align right."""
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head is not None:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                     for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def tok(t: Token | TopEntry | None) -> str:
    if t is None:
        return "(none)"
    if t.text is None:
        return f"<code>&lt;{t.id}&gt;</code>"
    return f"<code>&quot;{esc(t.text)}&quot;</code> ({t.id})"


def tokens(ts: Iterable[Token]) -> str:
    return "".join(esc(t.text) if t.text is not None else f"&lt;{t.id}&gt;" for t in ts)


def value(v: Any, absent: bool) -> str:
    if absent:
        return "<i>(absent)</i>"
    return "<code>" + esc(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), ensure_ascii=False)) + "</code>"


def _state(answer: bool | None) -> str:
    return "na" if answer is None else ("pass" if answer else "fail")


state = _state
"""The class of an answer's badge: ``pass``, ``fail`` or ``na``."""


# -- the verdict ------------------------------------------------------------------------------


def _verdict(report: Any, page: Page) -> Iterator[str]:
    v = report.verdict
    code = report.exit_code()
    answers: list[tuple[str, bool | None]]
    if report.kind == "check":
        answers = []
        if v.tier1 is not None:
            answers += [("Tier 1 repeatable", v.tier1), ("Tier 2 repeatable", v.tier2)]
        else:
            answers.append(("repeatability", None))
        if report.concurrency is not None:
            answers.append(("concurrency invariant", v.concurrency_invariant))
            if v.concurrency_invariant_logprobs is not None:
                answers.append(("concurrency invariant in logprobs", v.concurrency_invariant_logprobs))
        else:
            answers.append(("batch invariant", v.batch_invariant))
            if v.batch_invariant is not None:
                answers.append(("batch invariant in logprobs", v.batch_invariant_logprobs))
        if report.sweep is not None:
            answers.append(("engine settings stable", report.sweep.verdict.stable))
        claim = CLAIMS[v.claim] + (" (lowered: determinism incomplete)" if v.downgraded else "")
    else:
        answers = [("Tier 1", v.tier1), ("Tier 2", v.tier2)]
        claim = f"Tier {report.options.tier}: " + ("holds" if report.passed() else "does not hold")
    banner = {0: "pass", 1: "fail"}.get(code, "trouble")
    yield (f'<section id="verdict" class="banner {banner}" data-classification="{esc(v.classification)}" '
           f'data-exit="{code}">')
    yield f'<h1>detLLM {report.kind}: <code id="classification">{esc(v.classification)}</code></h1>'
    yield '<ul class="answers">'
    for name, answer in answers:
        word = "not asked" if answer is None and name in ("repeatability", "batch invariant") else tier_word(answer)
        yield f'<li class="{_state(answer)}" data-answer="{esc(name)}">{esc(name)}: {esc(word)}</li>'
    yield "</ul>"
    yield (f'<p class="claim"><b>Exit status <span id="exit">{code}</span></b> (judged at Tier {report.options.tier}); '
           f"claim: <b>{esc(claim)}</b></p>")
    yield f'<p class="caveat" id="verdict-text">{esc(v.text)}</p>'
    for note in report.notes:
        yield f'<p class="note">Note: {esc(note)}</p>'
    yield "</section>"


# -- setup ------------------------------------------------------------------------------------


def _kind(category: str, note: str | None) -> str:
    return esc(category + (f": {note}" if note else ""))


def _setup_diff(report: DiffReport, page: Page) -> Iterator[str]:
    left, right = report.left, report.right
    yield '<h2 id="setup">Setup</h2>'
    rows = [
        ("trace", f"<code>{esc(left.path)}</code>", f"<code>{esc(right.path)}</code>"),
        ("backend / model", esc(f"{left.backend} / {left.model}"), esc(f"{right.backend} / {right.model}")),
        ("dtype / device", esc(f"{left.dtype} / {left.device}"), esc(f"{right.dtype} / {right.device}")),
        ("batch size", str(left.batch_size), str(right.batch_size)),
        ("logprobs", esc(f"{left.logprobs}, top-{left.top_k}"), esc(f"{right.logprobs}, top-{right.top_k}")),
        ("rows", f"{left.rows}{'' if left.complete else ' (incomplete)'}", f"{right.rows}{'' if right.complete else ' (incomplete)'}"),
    ]
    yield table(["", "left", "right"], rows)
    s = report.setup
    yield from _differences(
        [("", d.field, value(d.left, d.absent == "left"), value(d.right, d.absent == "right"), d.category, d.note)
         for d in s.differences], s.attribution.cause, s.attribution.text, ("left", "right"), page,
    )


def _differences(rows: list[tuple[str, str, str, str, str, str | None]], cause: str, text: str,
                 sides: tuple[str, str], page: Page, run_column: bool = False) -> Iterator[str]:
    yield f'<h3>Setup differences ({len(rows)})</h3>'
    yield f'<p id="attribution" data-cause="{esc(cause)}">Attribution: <b>{esc(cause)}</b>. {esc(text)}</p>'
    if rows:
        head = (["run"] if run_column else []) + ["field", sides[0], sides[1], "kind", "points to"]
        body = [([run] if run_column else []) + [f"<code>{esc(f)}</code>", a, b, _kind(c, n), esc(POINTS_TO.get(c, c))]
                for run, f, a, b, c, n in rows[:MAX_TABLE_ROWS]]
        yield table(head, body, cls="setup")
        if len(rows) > MAX_TABLE_ROWS:
            yield _thin(page, f"{len(rows) - MAX_TABLE_ROWS} more setup differences are in the JSON report.")


def _setup_aggregate(report: Any, page: Page) -> Iterator[str]:
    yield '<h2 id="setup">Setup</h2>'
    s = report.setup
    yield f'<h3>Header fields that vary ({len(s.varying)})</h3>'
    yield f'<p id="attribution" data-cause="{esc(s.attribution.cause)}">Attribution: <b>{esc(s.attribution.cause)}</b>. {esc(s.attribution.text)}</p>'
    if s.varying:
        rows = []
        for f in s.varying[:MAX_TABLE_ROWS]:
            values = "<br>".join(f"{value(v.value, False)}: runs {esc(_runs(v.runs))}" for v in f.values)
            rows.append([f"<code>{esc(f.field)}</code>", values, esc(f.category), esc(POINTS_TO.get(f.category, f.category))])
        yield table(["field", "values", "kind", "points to"], rows, cls="setup")


def _runs(runs: list[int]) -> str:
    return ", ".join(map(str, runs[:20])) + (f", ... ({len(runs) - 20} more)" if len(runs) > 20 else "")


def _setup_check(report: Any, page: Page) -> Iterator[str]:
    from ._check_render import setting_lines

    yield '<h2 id="setup">Setup</h2>'
    model, runs, determinism = setting_lines(report)
    rows = [("model", esc(model)), ("runs", esc(runs)), ("determinism", esc(determinism))]
    yield table(None, rows, cls="settings")
    differences = []
    causes = []
    for comparison in report.comparisons:
        name = esc(report.runs[comparison.right].name)
        causes.append(comparison.setup.attribution)
        for diff in comparison.setup.differences:
            if diff.category == "ignored":
                continue
            differences.append((name, diff.field, value(diff.left, diff.absent == "left"),
                                value(diff.right, diff.absent == "right"), diff.category, diff.note))
    attribution = next((a for a in causes if a.cause != "run_to_run"), causes[0] if causes else None)
    if attribution is not None:
        yield from _differences(differences, attribution.cause, attribution.text, ("run 0", "that run"), page,
                                run_column=True)


# -- the agreement grid -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    classification: str
    """A classification, or ``baseline`` / ``missing``."""
    index: int | None
    title: str


def _grid_diff(report: DiffReport) -> tuple[list[str], Iterator[tuple[str, list[Cell]]]]:
    def rows() -> Iterator[tuple[str, list[Cell]]]:
        for r in report.prompts:
            index = r.divergence.index if r.divergence is not None else (r.inputs.index if r.inputs else None)
            at = f" at token {index}" if index is not None else ""
            if r.status == "right_only":
                base = Cell("missing", None, f"{r.prompt_id}: no row in the left trace")
            else:
                base = Cell("baseline", None, f"{r.prompt_id}: left")
            lacks = " (no row in the left trace)" if r.status == "right_only" else (
                " (no row in the right trace)" if r.status == "left_only" else "")
            right = Cell(r.classification, index, f"{r.prompt_id}: right {r.classification}{at}{lacks}")
            yield r.prompt_id, [base, right]

    return ["left", "right"], rows()


def _grid_check(report: Any) -> tuple[list[str], Iterator[tuple[str, list[Cell]]]]:
    by_right = {c.right: i for i, c in enumerate(report.comparisons)}

    def rows() -> Iterator[tuple[str, list[Cell]]]:
        for p in report.prompts:
            found = {d.comparison: d.result for d in p.divergences}
            cells = []
            for r, run in enumerate(report.runs):
                if r not in by_right:
                    cells.append(Cell("baseline", None, f"{p.prompt_id}: {run.name} (baseline)"))
                    continue
                result = found.get(by_right[r])
                if result is None:
                    cells.append(Cell("identical", None, f"{p.prompt_id}: {run.name} identical to run 0"))
                    continue
                index = result.divergence.index if result.divergence is not None else None
                at = f" at token {index}" if index is not None else ""
                cells.append(Cell(result.classification, index, f"{p.prompt_id}: {run.name} {result.classification}{at}"))
            yield p.prompt_id, cells

    return [f"{i}" for i in range(len(report.runs))], rows()


def _grid_aggregate(report: Any) -> tuple[list[str], Iterator[tuple[str, list[Cell]]]]:
    def rows() -> Iterator[tuple[str, list[Cell]]]:
        for p in report.prompts:
            where = {r: v for v in p.variants for r in v.runs}
            cells = []
            for r in range(len(report.runs)):
                v = where.get(r)
                if v is None or r in p.missing:
                    cells.append(Cell("missing", None, f"{p.prompt_id}: run {r} has no row"))
                elif v.index == 0:
                    cells.append(Cell("identical", None, f"{p.prompt_id}: run {r} gives the majority's tokens"))
                else:
                    name = v.comparison.classification if v.comparison is not None else p.classification
                    at = f" at token {v.first_divergence}" if v.first_divergence is not None else ""
                    cells.append(Cell(name, v.first_divergence, f"{p.prompt_id}: run {r} variant {v.index}, {name}{at}"))
            yield p.prompt_id, cells

    return [str(i) for i in range(len(report.runs))], rows()


_SHORT = {"identical": "·", "baseline": "=", "missing": "–", "logprob_drift": "lp"}


def _grid(report: Any, page: Page) -> Iterator[str]:
    columns, rows = {"diff": _grid_diff, "check": _grid_check, "aggregate": _grid_aggregate}[report.kind](report)
    yield '<h2 id="agreement">Agreement</h2>'
    what = "run 0" if report.kind == "check" else ("the left trace" if report.kind == "diff" else "the majority")
    yield (f"<p>One row per prompt, one column per run, each cell coloured by its classification against {what}; "
           "the number in a cell is the first divergent token (hover for details).</p>")
    shown: list[tuple[str, list[Cell]]] = []
    same = total = 0
    seen: dict[str, int] = {}
    for prompt_id, cells in rows:
        total += 1
        for c in cells:
            seen[c.classification] = seen.get(c.classification, 0) + 1
        agrees = all(c.classification in ("identical", "baseline") for c in cells)
        if total > MAX_GRID_ROWS and agrees:
            same += 1
            continue
        if len(shown) < MAX_GRID_ROWS:
            shown.append((prompt_id, cells))
    legend = [f'<li class="c-{esc(k)}">{esc(_SHORT.get(k, ""))} {esc(k)}: {n}</li>' for k, n in seen.items()]
    yield '<ul class="legend" id="grid-legend">' + "".join(legend) + "</ul>"
    n_cols = min(len(columns), MAX_GRID_RUNS)
    out = ['<div class="gridwrap"><table class="grid" id="grid"><tr><th class="pid">prompt</th>']
    names = _run_names(report)
    out += [f'<th scope="col" title="{esc(names[i])}">{esc(c)}</th>' for i, c in enumerate(columns[:n_cols])]
    out.append("</tr>")
    for prompt_id, cells in shown:
        out.append(f'<tr><td class="pid" title="{esc(prompt_id)}">{esc(prompt_id)}</td>')
        for c in cells[:n_cols]:
            text = str(c.index) if c.index is not None else _SHORT.get(c.classification, "×")
            out.append(f'<td class="c-{c.classification}" data-class="{c.classification}" title="{esc(c.title)}">{text}</td>')
        out.append("</tr>")
    out.append("</table></div>")
    yield "".join(out)
    hidden = total - len(shown)
    if hidden > 0:
        yield _thin(page, f"The grid draws {len(shown)} of {total} prompts: "
                    + (f"{same} that agree in every run are counted in the legend, not drawn" if same else "")
                    + (", and " if same and hidden - same else "")
                    + (f"{hidden - same} more beyond the first {MAX_GRID_ROWS}" if hidden - same else "")
                    + "; every prompt is in the JSON report.")
    if len(columns) > n_cols:
        yield _thin(page, f"The grid draws the first {n_cols} of {len(columns)} runs.")


def _run_names(report: Any) -> list[str]:
    if report.kind == "diff":
        return [f"left: {report.left.path}", f"right: {report.right.path}"]
    if report.kind == "check":
        return [f"run {i}: {run.name}" for i, run in enumerate(report.runs)]
    return [f"run {i}: {run.path}" for i, run in enumerate(report.runs)]


def _thin(page: Page, text: str) -> str:
    page.thinned.append(text)
    return f'<p class="note thinned">{esc(text)}</p>'


thin = _thin
"""A note that the page shows part of what the report holds (repeated at the page's top)."""


# -- diverging prompts ------------------------------------------------------------------------


def _side_rows(d: Any) -> list[list[str]]:
    def cells(side: Any) -> dict[str, str]:
        if side.token is None:
            return {"token": esc(f"stopped after {side.length} tokens ({side.finish_reason})")}
        other = ("not in the top-k" if side.rank_in_other is None
                 else f"#{side.rank_in_other}, logprob {num(side.other_logprob)}")
        return {
            "token": tok(side.token),
            "logprob": esc(num(side.logprob)),
            "rank on the other side": esc(other),
            "top1 - top2 margin": esc(num(side.margin)),
            "continues": f"<code>&quot;{tokens(side.continuation)}&quot;</code>" if side.continuation else "",
        }

    left, right = cells(d.left), cells(d.right)
    return [[esc(k), left.get(k, ""), right.get(k, "")] for k in dict.fromkeys(list(left) + list(right))]


def divergence_html(result: PromptResult, title: str, factor: float, k: int, anchor: str) -> Iterator[str]:
    """One prompt's first divergence: the drift chart, context, both sides, top-k, evidence."""
    from ._html_svg import drift_chart

    d = result.divergence
    assert d is not None
    yield (f'<section class="prompt" id="{anchor}" data-classification="{esc(result.classification)}" '
           f'data-index="{d.index}"><h3>{title}</h3>')
    yield drift_chart(result, esc)
    drift = result.drift
    if drift is not None and drift.compared:
        if drift.first_index is None:
            yield f"<p>Drift over the {d.index} tokens before: none, the logprobs agree bit for bit.</p>"
        else:
            yield (f"<p>Drift over the {d.index} tokens before: first at token {drift.first_index}, "
                   f"max |Δ logprob| {esc(num(drift.max_abs))} (token {drift.max_index}), RMS {esc(num(drift.rms))}. "
                   '<span class="note">The report keeps these figures, not every token\'s Δ, so the chart '
                   "draws the RMS level and the maximum.</span></p>")
    if d.context:
        start = "..." if d.context_start > 0 else ""
        yield (f"<p>Common context (tokens {d.context_start}-{d.index - 1}): "
               f"<code>{start}&quot;{tokens(d.context)}&quot;</code></p>")
    yield table(["", "left", "right"], _side_rows(d), cls="sides")
    if d.left.top or d.right.top:
        rows = []
        for i in range(max(len(d.left.top), len(d.right.top))):
            a = d.left.top[i] if i < len(d.left.top) else None
            b = d.right.top[i] if i < len(d.right.top) else None
            rows.append([str(i + 1), tok(a) if a else "", f"{a.logprob:.8g}" if a else "",
                         tok(b) if b else "", f"{b.logprob:.8g}" if b else ""])
        yield f"<p>Top-{k} at token {d.index}:</p>"
        yield table(["rank", "left token", "left logprob", "right token", "right logprob"], rows, cls="topk",
                    numeric=(0, 2, 4))
    e = result.evidence
    if e is not None:
        if e.gap is not None and e.tolerance is not None:
            relation = "&le;" if e.gap <= e.tolerance else "&gt;"
            bound = "at least " if e.gap_is_bound else ""
            yield (f'<p class="tolerance">Gap {bound}{esc(num(e.gap))} {relation} tolerance {esc(num(e.tolerance))} '
                   f"({factor:g} x noise {esc(num(e.noise))}, from the {esc(str(e.noise_source))}).</p>")
        yield f'<p class="why"><b>Why:</b> {esc(e.reason)}</p>'
    for note in result.notes:
        yield f'<p class="note">Note: {esc(note)}</p>'
    yield "</section>"


def _details_diff(report: DiffReport, page: Page) -> Iterator[str]:
    k = min(report.left.top_k, report.right.top_k)
    factor = report.options.near_tie_factor
    drifted: list[PromptResult] = []
    drifted_total = 0
    unmatched: list[PromptResult] = []
    header = False
    for n, r in enumerate(report.diverging()):
        if r.status == "logprobs_differ":
            drifted_total += 1
            if len(drifted) < MAX_TABLE_ROWS:
                drifted.append(r)
            continue
        if r.status in ("left_only", "right_only"):
            unmatched.append(r)
            continue
        if not header:
            yield '<h2 id="divergences">First divergences</h2>'
            header = True
        if r.divergence is not None:
            title = f"<code>{esc(r.prompt_id)}</code>: {esc(r.classification)} at token {r.divergence.index}"
            yield from divergence_html(r, title, factor, k, f"p{n}")
        else:
            yield f'<section class="prompt" id="p{n}"><h3><code>{esc(r.prompt_id)}</code>: {esc(r.classification)}</h3>'
            if r.evidence is not None:
                yield f'<p class="why"><b>Why:</b> {esc(r.evidence.reason)}</p>'
            yield "</section>"
    if drifted:
        yield f'<h2 id="drifted">Tokens equal, logprobs differ ({drifted_total})</h2>'
        rows = []
        for r in drifted:
            d = r.drift
            assert d is not None
            first = str(d.first_index) if d.first_index is not None else f"top-k at {d.top_first_index}"
            rows.append([f"<code>{esc(r.prompt_id)}</code>", first, esc(num(d.max_abs)),
                         "" if d.max_index is None else str(d.max_index), esc(num(d.rms))])
        yield table(["prompt", "first differs at", "max |Δ|", "at token", "RMS"], rows, numeric=(1, 2, 3, 4))
        if drifted_total > len(drifted):
            yield _thin(page, f"{drifted_total - len(drifted)} more prompts whose logprobs differ are in the JSON report.")
    for side in ("left", "right"):
        ids = [r.prompt_id for r in unmatched if r.status == f"{side}_only"]
        if ids:
            yield f"<h3>Only in the {side} trace ({len(ids)})</h3><p>" + ", ".join(f"<code>{esc(i)}</code>" for i in ids) + "</p>"


def _details_check(report: Any, page: Page) -> Iterator[str]:
    shown = total = 0
    header = False
    for n, prompt in enumerate(report.prompts):
        first = next((d for d in prompt.divergences if d.result.divergence is not None), None)
        if first is None:
            continue
        total += 1
        if shown >= MAX_DETAILS:
            continue
        if not header:
            yield '<h2 id="divergences">First divergences</h2>'
            header = True
        shown += 1
        c = report.comparisons[first.comparison]
        left, right = report.runs[c.left], report.runs[c.right]
        r = first.result
        assert r.divergence is not None
        title = (f"<code>{esc(prompt.prompt_id)}</code>, {esc(right.name)} against {esc(left.name)}: "
                 f"{esc(r.classification)} at token {r.divergence.index}")
        k = min(left.trace.top_k, right.trace.top_k)
        yield from divergence_html(r, title, report.options.near_tie_factor, k, f"p{n}")
    if total > shown:
        yield _thin(page, f"Shown in full: the first {shown} of {total} diverging prompts; all are in the JSON report.")


def _details_aggregate(report: Any, page: Page) -> Iterator[str]:
    shown = total = 0
    header = False
    for n, prompt in enumerate(report.prompts):
        variant = next((v for v in prompt.variants if v.comparison is not None and v.comparison.divergence is not None), None)
        if variant is None:
            continue
        total += 1
        if shown >= MAX_DETAILS:
            continue
        if not header:
            yield '<h2 id="divergences">First divergences</h2>'
            header = True
        shown += 1
        r = variant.comparison
        assert r is not None and r.divergence is not None
        title = (f"<code>{esc(prompt.prompt_id)}</code>, run {variant.run} against run {variant.reference_run} "
                 f"(the majority): {esc(r.classification)} at token {r.divergence.index}")
        k = min(report.runs[variant.run].top_k, report.runs[variant.reference_run].top_k)
        yield from divergence_html(r, title, report.options.near_tie_factor, k, f"p{n}")
    if total > shown:
        yield _thin(page, f"Shown in full: the first {shown} of {total} diverging prompts; all are in the JSON report.")


# -- positions and reproduction ---------------------------------------------------------------


def _histogram(report: Any, page: Page) -> Iterator[str]:
    from ._html_svg import histogram

    what = {"diff": "prompts", "aggregate": "runs", "check": "comparisons"}[report.kind]
    chart, note = histogram(report.summary.divergence_positions, esc, what)
    yield '<h2 id="positions">Where tokens first diverge</h2>'
    if not chart:
        yield "<p>No tokens diverge.</p>"
        return
    yield chart
    if note:
        yield _thin(page, note)


def default_command(report: Any) -> list[list[str]]:
    """The commands that make this report again, for the reproduce box."""
    if report.kind == "diff":
        return [["detllm", "diff", report.left.path, report.right.path, *comparison_arguments(report.options.to_options())]]
    if report.kind == "aggregate":
        return [["detllm", "report", *(r.path for r in report.runs), *comparison_arguments(report.options.to_options())]]
    if report.kind == "replay":
        return [["detllm", "diff", report.original.path, report.replay.path]]
    if report.kind == "bisect":
        flags = comparison_arguments(report.options.to_options(), CHECK_FIELDS)
        return [["detllm", "bisect", report.left.directory, report.right.directory, *flags]]
    return []


EXIT_WORDS = {
    "diff": "0: the same; 1: they differ",
    "aggregate": "0: the same; 1: they differ",
    "check": "0: the same; 1: they differ",
    "replay": "0: no recorded token would flip under the replay; 1: some would",
    "bisect": "0: the two runs agree; 1: they diverge, the ranking says why; 2: no rerun could be done",
}
"""What the exit status of each kind's command says, for the reproduce box."""


def _reproduce(report: Any, page: Page) -> Iterator[str]:
    commands = [list(page.command)] if page.command else default_command(report)
    if report.kind == "check":
        for c in report.comparisons:
            if c.tier1 is False or (report.options.tier == 2 and c.tier2 is not True):
                commands.append(["detllm", "diff", report.runs[c.left].trace.path, report.runs[c.right].trace.path])
    yield '<h2 id="reproduce">How to reproduce</h2><div class="repro">'
    if not commands:
        yield "<p>The command that made this report is not recorded with it.</p>"
    else:
        yield f"<p>Run again (exit status {EXIT_WORDS.get(report.kind, EXIT_WORDS['diff'])}):</p>"
        yield '<pre id="command">' + "\n".join(esc(shlex.join(c)) for c in commands) + "</pre>"
    yield "</div>"


def _replay_check(report: Any, page: Page) -> Iterator[str]:
    """A check's replay-backed verdicts (``check --replay``); nothing otherwise."""
    if report.replayed is not None:
        from ._check_replay_render import replay_html

        yield from replay_html(report.replayed)


def _concurrency_check(report: Any, page: Page) -> Iterator[str]:
    """A server check's odd-one-out rate per concurrency level; nothing otherwise."""
    if report.concurrency is not None:
        from ._concurrency_render import concurrency_html

        yield from concurrency_html(report.concurrency)


def _sweep_check(report: Any, page: Page) -> Iterator[str]:
    """A check's engine-setting sweep (``check --sweep``); nothing otherwise."""
    if report.sweep is not None:
        from ._sweep_render import sweep_html

        yield from sweep_html(report.sweep, report.options.tier)


Section = Callable[[Any, Page], Iterator[str]]


def _elsewhere(name: str) -> Callable[..., Any]:
    """The function ``module:function`` (relative to this package), imported when first called:
    a replay's and a bisect's sections live with their text and Markdown."""
    module, _, function = name.partition(":")

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(module, __package__), function)(*args)

    call.__name__ = function
    return call


SECTIONS: dict[str, list[Section]] = {
    "diff": [_verdict, _setup_diff, _grid, _details_diff, _histogram, _reproduce],
    "aggregate": [_verdict, _setup_aggregate, _grid, _details_aggregate, _histogram, _reproduce],
    "check": [_verdict, _setup_check, _concurrency_check, _grid, _details_check, _replay_check, _sweep_check,
              _histogram, _reproduce],
    "replay": [*map(_elsewhere, ("._replay_render:html_verdict", "._replay_render:html_setup",
                                 "._replay_render:html_figures", "._replay_render:html_flips",
                                 "._replay_render:html_prompts")), _reproduce],
    "bisect": [*map(_elsewhere, ("._bisect_render:html_verdict", "._bisect_render:html_differences",
                                 "._bisect_render:html_runs")), _reproduce],
}
"""The page's sections per report kind, in order (see the module's docstring)."""


def _classified(report: Any) -> str:
    return f"detLLM {report.kind}: {report.verdict.classification}"


TITLES: dict[str, Callable[[Any], str]] = {
    "diff": _classified,
    "aggregate": _classified,
    "check": _classified,
    "replay": _elsewhere("._replay_render:html_title"),
    "bisect": _elsewhere("._bisect_render:html_title"),
}
"""The page's title per report kind."""


def render_html(report: Any, *, command: Sequence[str] | None = None) -> str:
    """The report as one HTML page. ``command``: the command that recorded it, when known."""
    page = Page(command=command)
    body = [part for section in SECTIONS[report.kind] for part in section(report, page)]
    title = TITLES[report.kind](report)
    summary = ""
    if page.thinned:
        summary = ('<p class="note" id="thinned">This page summarises a large report: '
                   + esc(" ".join(page.thinned)) + "</p>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style></head>\n<body>\n"
        + summary
        + "\n".join(body)
        + f'\n<footer>{esc(report.producer.name)} {esc(report.producer.version)} · report format '
        "detllm.report 1 · this page runs no script and loads nothing</footer>\n</body></html>\n"
    )

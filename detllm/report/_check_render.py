"""Text and Markdown for check reports."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

from ..diff.model import CheckComparison, CheckDivergence, CheckPrompt, CheckReport, PromptResult
from .._numbers import count
from ._aggregate_render import MAX_RUNS_LISTED
from ._concurrency_render import concurrency_markdown, concurrency_text
from .._escape import code
from .._escape import markdown as cell
from .._escape import text as escape
from ._markdown import divergence_md
from ._sweep_render import sweep_markdown, sweep_text
from ._check_replay_render import replay_markdown, replay_text
from ._text import DEFAULT_MAX_PROMPTS, WIDTH, divergence_lines, drift_summary, paragraph, tier_word
from .._text_util import clip, pad

CLAIMS = {"tier2": "Tier 2", "tier1": "Tier 1", "none": "none"}

TOKEN_FAILURES = ("tokens_diverge", "stopped_early", "inputs_differ", "left_only", "right_only")


def _questions(report: CheckReport) -> str:
    v = report.verdict
    batch = tier_word(v.batch_invariant) if v.batch_invariant is not None else "not asked"
    last = f"batch invariant: {batch}"
    if report.concurrency is not None:
        last = f"concurrency invariant: {tier_word(v.concurrency_invariant)}"
    sweep = f"   sweep: {tier_word(report.sweep.verdict.stable)}" if report.sweep is not None else ""
    if v.tier1 is None:
        return f"Repeatability: not asked   {last}{sweep}"
    return f"Tier 1 repeatable: {tier_word(v.tier1)}   Tier 2 repeatable: {tier_word(v.tier2)}   {last}{sweep}"


def _status_line(report: CheckReport) -> str:
    v = report.verdict
    claim = CLAIMS[v.claim] + (" (lowered: determinism incomplete)" if v.downgraded else "")
    return f"exit status {report.exit_code()} (judged at Tier {report.options.tier}); claim: {claim}"


def setting_lines(report: CheckReport) -> tuple[str, str, str]:
    first = report.runs[0].trace
    c = report.check
    model = (
        f"{c.model} ({first.backend}, {first.device}, {first.dtype}, "
        f"{'sampling' if first.do_sample else 'greedy'}, "
        + ("no logprobs" if first.logprobs == "none" else f"{first.logprobs} logprobs, top-{first.top_k}")
        + ")"
    )
    compositions = ", ".join(c.compositions) if c.compositions else "in-order only"
    process = "each repeat in a process of its own" if c.isolate else "one process, model loaded once"
    runs = (
        f"{count(c.runs, 'repeat')} at batch size {c.batch_sizes[0]}; batch sizes "
        f"{', '.join(map(str, c.batch_sizes))}; compositions {compositions}; {process}"
    )
    if c.concurrency is not None:
        runs = (
            f"{count(c.runs, 'run')} of every prompt at each of {', '.join(map(str, c.concurrency))} requests in "
            f"flight; those at {c.concurrency[0]} are the repeats"
        )
    d = report.determinism
    determinism = f"{d.mode}, " + ("complete" if d.complete else f"incomplete ({', '.join(sorted(d.missing))} missing)")
    return model, runs, determinism


def _labelled(label: str, text: str) -> list[str]:
    """``  label        text`` wrapped under its own start."""
    head = "  " + pad(label, 13)
    return textwrap.wrap(escape(text), WIDTH - 1, initial_indent=head, subsequent_indent=" " * len(head), break_on_hyphens=False)


def _tokens_cell(c: CheckComparison) -> str:
    diverging = sum(c.statuses.get(s, 0) for s in TOKEN_FAILURES)
    return "same" if not diverging else f"{diverging} diverge"


def _logprobs_cell(c: CheckComparison) -> str:
    """Among the prompts whose tokens agree: how many have other logprobs."""
    if c.tier2 is None and c.tier1:
        return "n/a"
    differ = c.statuses.get("logprobs_differ", 0)
    if not differ and not c.statuses.get("identical", 0):
        return "-"
    return "same" if not differ else f"{differ} differ"


def _shown(report: CheckReport, max_prompts: int) -> list[tuple[CheckPrompt, CheckDivergence]]:
    """The first token divergence of each prompt that has one, at most ``max_prompts``."""
    shown = []
    for prompt in report.prompts:
        first = next((d for d in prompt.divergences if d.result.divergence is not None), None)
        if first is not None:
            shown.append((prompt, first))
        if len(shown) >= max_prompts:
            break
    return shown


def _diverging_prompts(report: CheckReport) -> int:
    return sum(any(d.result.divergence is not None for d in p.divergences) for p in report.prompts)


def _where(report: CheckReport, d: CheckDivergence) -> str:
    c = report.comparisons[d.comparison]
    result = d.result
    at = f" at token {result.divergence.index}" if result.divergence is not None else ""
    return f"{report.runs[c.right].name} {result.classification}{at}"


def _drifted(report: CheckReport, limit: int) -> tuple[list[tuple[CheckPrompt, PromptResult, CheckComparison]], int]:
    """Prompts whose tokens agree with run 0 in a comparison but whose logprobs do not."""
    found = []
    total = 0
    for prompt in report.prompts:
        for d in prompt.divergences:
            if d.result.status == "logprobs_differ":
                total += 1
                if len(found) < limit:
                    found.append((prompt, d.result, report.comparisons[d.comparison]))
    return found, total


def render_check_text(report: CheckReport, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    return "\n".join(_text(report, max_prompts)) + "\n"


def _text(report: CheckReport, max_prompts: int) -> Iterator[str]:
    v, s = report.verdict, report.summary
    yield f"detllm check: {escape(v.classification)}"
    yield _questions(report)
    yield _status_line(report)
    yield ""
    model, runs, determinism = setting_lines(report)
    yield from _labelled("model", model)
    yield from _labelled("runs", runs)
    yield from _labelled("determinism", determinism)
    yield ""
    yield from paragraph(v.text, "")
    for note in report.notes:
        yield from paragraph("Note: " + note, "")
    yield ""
    if report.concurrency is not None:
        yield from concurrency_text(report.concurrency, max_prompts)
        yield ""
    yield f"Runs ({len(report.runs)}; run 0 is the baseline)"
    yield f"  {'#':>3}  {pad('trace', 32)} {'batch':>5}  {pad('composition', 14)} {'moved':>5}  process"
    for i, run in enumerate(report.runs[:MAX_RUNS_LISTED]):
        moved = "-" if run.neighbours_changed is None else str(run.neighbours_changed)
        incomplete = " INCOMPLETE" if not run.trace.complete else ""
        yield (
            f"  {i:>3}  {pad(clip(escape(run.trace.path), 32, left=True), 32)} {run.batch_size:>5}  "
            f"{pad(clip(escape(run.composition), 14), 14)} {moved:>5}  {'own' if run.isolated else 'check'}{incomplete}"
        )
    if len(report.runs) > MAX_RUNS_LISTED:
        yield f"  ... and {len(report.runs) - MAX_RUNS_LISTED} more (all are in the JSON report)"
    yield "  (moved: prompts whose batch-mates differ from the in-order run's at that size)"
    yield ""
    yield "Comparisons with run 0"
    yield f"  {'#':>3}  {pad('run', 20)} {pad('question', 9)} {pad('tokens', 11)} {pad('logprobs', 10)} classification"
    for c in report.comparisons[:MAX_RUNS_LISTED]:
        name = clip(escape(report.runs[c.right].name), 20)
        yield (
            f"  {c.right:>3}  {pad(name, 20)} {pad(escape(c.question), 9)} {pad(_tokens_cell(c), 11)} "
            f"{pad(_logprobs_cell(c), 10)} {escape(c.classification)}"
        )
    if len(report.comparisons) > MAX_RUNS_LISTED:
        yield f"  ... and {len(report.comparisons) - MAX_RUNS_LISTED} more (all are in the JSON report)"
    yield "  (logprobs: among the prompts whose tokens agree)"
    if report.sweep is not None:
        yield from sweep_text(report.sweep, report.options.tier)
    if report.replayed is not None:
        yield from replay_text(report.replayed)
    yield ""
    yield f"Prompts ({s.prompts})"
    yield f"  {pad('prompt', 24)} {'completions':>11}  {pad('repeats', 19)} batch"
    for p in report.prompts[: max_prompts * 2]:
        yield (
            f"  {pad(clip(escape(p.prompt_id), 24), 24)} {p.completions:>11}  "
            f"{pad(escape(p.repeat or '-'), 19)} {escape(p.batch or '-')}"
        )
    if len(report.prompts) > max_prompts * 2:
        yield f"  ... and {len(report.prompts) - max_prompts * 2} more (all are in the JSON report)"
    yield "  (completions: distinct token sequences over all runs; repeats, batch: the"
    yield "  most serious classification against run 0)"
    splits = [p for p in report.prompts if p.split is not None]
    if splits:
        yield ""
        yield "Where completions split"
        for p in splits[:max_prompts]:
            assert p.split is not None
            yield from paragraph(f"{p.prompt_id}: {p.split.text}", "  ")
        if len(splits) > max_prompts:
            yield f"  ... and {len(splits) - max_prompts} more prompts"
    for prompt, d in _shown(report, max_prompts):
        c = report.comparisons[d.comparison]
        result = d.result
        assert result.divergence is not None
        left, right = report.runs[c.left], report.runs[c.right]
        yield ""
        title = (
            f'Prompt "{prompt.prompt_id}", {right.name} against {left.name}: {result.classification} '
            f"at token {result.divergence.index} (left {count(result.divergence.left.length, 'token')}, "
            f"right {result.divergence.right.length})"
        )
        yield from paragraph(title, "")
        k = min(left.trace.top_k, right.trace.top_k)
        yield from divergence_lines(result, report.options.near_tie_factor, k)
        others = [_where(report, o) for o in prompt.divergences if o is not d and o.result.status != "logprobs_differ"]
        if others:
            yield from paragraph("Also against run 0: " + "; ".join(others) + ".")
    hidden = _diverging_prompts(report) - len(_shown(report, max_prompts))
    if hidden > 0:
        yield ""
        yield f"... and {hidden} more diverging prompts (all are in the JSON report)"
    drifted, total = _drifted(report, max_prompts)
    if drifted:
        yield ""
        yield f"Tokens equal, logprobs differ ({count(total, 'prompt and run', 'prompts and runs')})"
        for prompt, result, c in drifted:
            name = clip(escape(report.runs[c.right].name), 16)
            yield f"  {pad(clip(escape(prompt.prompt_id), 16), 16)} {pad(name, 16)} {clip(drift_summary(result, short=True), WIDTH - 38)}"
        if total > len(drifted):
            yield f"  ... and {total - len(drifted)} more"


def render_check_markdown(report: CheckReport, *, max_prompts: int = DEFAULT_MAX_PROMPTS) -> str:
    return "\n".join(_markdown(report, max_prompts)).rstrip("\n") + "\n"


def _markdown(report: CheckReport, max_prompts: int) -> Iterator[str]:
    v = report.verdict
    yield f"### detLLM check: {code(v.classification)}"
    yield ""
    if v.tier1 is None:
        repeat = "Repeatability: not asked"
    else:
        repeat = f"Tier 1 repeatable: {tier_word(v.tier1)} · Tier 2 repeatable: {tier_word(v.tier2)}"
    batch = tier_word(v.batch_invariant) if v.batch_invariant is not None else "not asked"
    last = f"batch invariant: {batch}"
    if report.concurrency is not None:
        last = f"concurrency invariant: {tier_word(v.concurrency_invariant)}"
    lowered = ", lowered: determinism incomplete" if v.downgraded else ""
    sweep = f" · sweep: {tier_word(report.sweep.verdict.stable)}" if report.sweep is not None else ""
    yield f"**{repeat} · {last}{sweep}** (judged at Tier {report.options.tier}; claim: {CLAIMS[v.claim]}{lowered})"
    yield ""
    yield cell(v.text)
    yield ""
    for note in report.notes:
        yield f"Note: {cell(note)}"
        yield ""
    model, runs, determinism = setting_lines(report)
    yield "| | |"
    yield "|---|---|"
    yield f"| model | {cell(model)} |"
    yield f"| runs | {cell(runs)} |"
    yield f"| determinism | {cell(determinism)} |"
    yield ""
    if report.concurrency is not None:
        yield from concurrency_markdown(report.concurrency, max_prompts)
    yield "| run | trace | batch | composition | moved | process | question | tokens | logprobs | classification |"
    yield "|---:|---|---:|---|---:|---|---|---|---|---|"
    by_right = {c.right: c for c in report.comparisons}
    for i, run in enumerate(report.runs[:MAX_RUNS_LISTED]):
        c = by_right.get(i)
        moved = "" if run.neighbours_changed is None else str(run.neighbours_changed)
        compared = (
            f"{cell(c.question)} | {_tokens_cell(c)} | {_logprobs_cell(c)} | {code(c.classification)}"
            if c is not None
            else "baseline | | |"
        )
        yield (
            f"| {i} | {code(run.trace.path)} | {run.batch_size} | {cell(run.composition)} | {moved} | "
            f"{'own' if run.isolated else 'check'} | {compared} |"
        )
    if len(report.runs) > MAX_RUNS_LISTED:
        yield f"| ... | {len(report.runs) - MAX_RUNS_LISTED} more | | | | | | | | |"
    yield ""
    if report.sweep is not None:
        yield from sweep_markdown(report.sweep, report.options.tier)
    if report.replayed is not None:
        yield from replay_markdown(report.replayed)
    yield "| prompt | completions | repeats | batch | split |"
    yield "|---|---:|---|---|---|"
    for p in report.prompts[: max_prompts * 2]:
        split = cell(p.split.text) if p.split is not None else ""
        repeat_cell = code(p.repeat) if p.repeat else "-"
        batch_cell = code(p.batch) if p.batch else "-"
        yield f"| {code(p.prompt_id)} | {p.completions} | {repeat_cell} | {batch_cell} | {split} |"
    if len(report.prompts) > max_prompts * 2:
        yield f"| ... {len(report.prompts) - max_prompts * 2} more | | | | |"
    yield ""
    shown = _shown(report, max_prompts)
    if shown:
        yield "**First divergences**"
        yield ""
    for prompt, d in shown:
        c = report.comparisons[d.comparison]
        result = d.result
        assert result.divergence is not None
        left, right = report.runs[c.left], report.runs[c.right]
        title = (
            f"#### {code(prompt.prompt_id)}, {cell(right.name)} against {cell(left.name)}: {code(result.classification)} "
            f"at token {result.divergence.index}"
        )
        k = min(left.trace.top_k, right.trace.top_k)
        yield from divergence_md(result, report.options.near_tie_factor, k, title=title)
        others = [_where(report, o) for o in prompt.divergences if o is not d and o.result.status != "logprobs_differ"]
        if others:
            yield cell("Also against run 0: " + "; ".join(others) + ".")
            yield ""
    hidden = _diverging_prompts(report) - len(shown)
    if hidden > 0:
        yield f"... and {hidden} more diverging prompts (all are in the JSON report)."
        yield ""
    drifted, total = _drifted(report, max_prompts)
    if drifted:
        yield f"**Tokens equal, logprobs differ** ({count(total, 'prompt and run', 'prompts and runs')})"
        yield ""
        yield "| prompt | run | drift |"
        yield "|---|---|---|"
        for prompt, result, c in drifted:
            yield f"| {code(prompt.prompt_id)} | {cell(report.runs[c.right].name)} | {cell(drift_summary(result, short=True))} |"
        if total > len(drifted):
            yield f"| ... {total - len(drifted)} more | | |"
        yield ""

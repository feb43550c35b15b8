"""Building a check report from a check directory's traces, offline.

The capture side records the traces; everything here reads files only, so a check
directory can be re-judged (``detllm report``) or cut down (``detllm pack``) on a
machine without torch. Every comparison is the diff engine's: each run against run
0, and the aggregate over all runs for the distinct completions of each prompt.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from ._engine import diff_traces
from ._model import CLASSIFICATIONS, TIER1_FAILURES, PositionCount
from ._options import DiffOptions
from .._numbers import count
from ..errors import InputError, UsageError
from ..reader import open_trace
from ..rundir import (
    DETERMINISM_FILE,
    DETERMINISM_FORMAT,
    ISOLATED_DIR,
    CheckPlan,
    DeterminismRecord,
    PlannedRun,
    read_document,
    read_run_config,
)
from ..writer import PARTIAL_SUFFIX
from ._aggregate import aggregate_traces
from ._concurrency_check import with_concurrency
from ._check_replay import build_check_replay
from ._sweep import build_sweep_report
from ._check_model import (
    CheckComparison,
    CheckDeterminism,
    CheckDivergence,
    CheckPrompt,
    CheckReport,
    CheckRun,
    CheckSettings,
    CheckSummary,
    CheckVerdict,
)

def read_plan(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], CheckPlan]:
    """A check directory's ``run_config.json`` and its ``check`` member."""
    config = read_run_config(directory)
    if config.check is None:
        raise InputError(f"{Path(directory)}: a run directory, not a check directory (run_config.json has no check)")
    return config.document, config.check


def read_determinism(directory: str | os.PathLike[str]) -> CheckDeterminism:
    """The check's determinism record: ``determinism_applied.json``, with the controls
    missing in any isolated repeat's own process (``isolated/*/``) added. A file that does
    not follow its format (``formats/run-directory.md``) is one located error."""
    base = Path(directory)
    files = [base / DETERMINISM_FILE, *sorted(base.glob(f"{ISOLATED_DIR}/*/{DETERMINISM_FILE}"))]
    modes = set()
    complete = True
    missing: dict[str, str] = {}
    for path in files:
        record = read_document(path, DETERMINISM_FORMAT, DeterminismRecord)
        if record is None:
            raise InputError(f"{path}: no such file")
        modes.add(record.mode)
        complete = complete and record.complete
        for name, reason in record.unavailable.items():
            if not reason.startswith("not needed: "):
                missing.setdefault(name, reason)
    mode = modes.pop() if len(modes) == 1 else "best-effort"
    return CheckDeterminism(mode=mode, complete=complete and not missing, missing=missing)  # type: ignore[arg-type]


def rebuild_check_report(
    directory: str | os.PathLike[str], options: DiffOptions | None = None, *, allow_incomplete: bool = False
) -> CheckReport:
    """Judge a check directory again from its traces (``options`` default to the check's;
    ``allow_incomplete`` applies to those defaults)."""
    document, plan = read_plan(directory)
    config = document.get("config") or {}
    if options is None:
        options = DiffOptions(tier=plan.tier, atol=plan.atol, allow_incomplete=allow_incomplete)
    settings = CheckSettings(
        model=str(config.get("model", "")),
        backend=str(config.get("backend", "")),
        runs=plan.runs,
        batch_sizes=plan.batch_sizes,
        compositions=plan.compositions,
        isolate=plan.isolate,
        concurrency=plan.concurrency,
    )
    return build_check_report(directory, settings, plan.traces, read_determinism(directory), options)


class _Placed(msgspec.Struct):
    prompt_id: str
    batch: Any = None


_placed = msgspec.json.Decoder(_Placed)


def _batch_mates(path: Path) -> dict[str, frozenset[str]] | None:
    """Each prompt's batch-mates, from the rows' placements; None when a row has none."""
    batches: dict[int, list[str]] = {}
    with open_trace(path, verify_digest=False, check_rows=False, allow_incomplete=path.name.endswith(PARTIAL_SUFFIX)) as reader:
        for _, raw in reader.raw_rows():
            row = _placed.decode(raw)
            if not isinstance(row.batch, dict) or "index" not in row.batch:
                return None
            batches.setdefault(row.batch["index"], []).append(row.prompt_id)
    mates = {}
    for members in batches.values():
        group = frozenset(members)
        for pid in members:
            mates[pid] = group - {pid}
    return mates


def build_check_report(
    directory: str | os.PathLike[str],
    settings: CheckSettings,
    planned: Sequence[PlannedRun],
    determinism: CheckDeterminism,
    options: DiffOptions,
) -> CheckReport:
    """Compare every run with run 0 and aggregate all of them."""
    base = Path(directory)
    planned, notes = recorded_runs(base, planned, options.allow_incomplete)
    if len(planned) < 2:
        raise UsageError("a check needs at least two traces to compare")
    paths = [base / run.path for run in planned]
    engine_options = options.replace(tier=1)  # both tiers are read off every comparison
    comparisons: list[CheckComparison] = []
    per_prompt: dict[str, list[CheckDivergence]] = {}
    infos = []
    for index, (run, path) in enumerate(zip(planned, paths)):
        if index == 0:
            continue
        report = diff_traces(paths[0], path, engine_options)
        if index == 1:
            infos.append(report.left)
        infos.append(report.right)
        comparisons.append(
            CheckComparison(
                question="repeat" if run.role == "repeat" else ("concurrency" if run.role == "concurrency" else "batch"),
                left=0,
                right=index,
                classification=report.classification,
                tier1=report.verdict.tier1,
                tier2=report.verdict.tier2,
                statuses=report.summary.statuses,
                divergence_positions=report.summary.divergence_positions,
                setup=report.setup,
            )
        )
        for result in report.diverging():
            per_prompt.setdefault(result.prompt_id, []).append(CheckDivergence(comparison=len(comparisons) - 1, result=result))
        notes.extend(_relative(note, base) for note in report.notes if _relative(note, base) not in notes)
    aggregate = aggregate_traces(paths, engine_options)

    mates = [_batch_mates(path) for path in paths]
    runs = []
    for index, (run, info) in enumerate(zip(planned, infos)):
        reference = _reference(planned, index)
        changed = None
        if reference is not None and mates[index] is not None and mates[reference] is not None:
            changed = sum(mates[index].get(pid) != mates[reference].get(pid) for pid in mates[index])  # type: ignore[union-attr]
        runs.append(
            CheckRun(
                name=run.name,
                role=run.role,
                batch_size=run.batch_size,
                composition=run.composition,
                repeat=run.repeat,
                isolated=run.isolated,
                neighbours_changed=changed,
                trace=msgspec.structs.replace(info, path=run.path),
                concurrency=run.concurrency,
            )
        )

    prompts = []
    for item in aggregate.prompts:
        divergences = per_prompt.get(item.prompt_id, [])
        prompts.append(
            CheckPrompt(
                prompt_id=item.prompt_id,
                completions=item.completions,
                majority_runs=item.majority_runs,
                logprob_groups=item.logprob_groups,
                repeat=_worst(comparisons, divergences, "repeat"),
                batch=_worst(comparisons, divergences, "batch"),
                split=item.split,
                divergences=divergences,
            )
        )
    notes.extend(_setup_notes(comparisons, runs))
    notes.extend(_neighbour_notes(runs, len(prompts)))
    summary = _summary(comparisons, prompts, len(planned))
    verdict = _verdict(settings, determinism, comparisons, summary, runs, options)
    concurrency = None
    if settings.concurrency is not None:
        concurrency, verdict = with_concurrency(aggregate, planned, comparisons, verdict)
    return CheckReport.of(
        options,
        check=settings,
        determinism=determinism,
        runs=runs,
        verdict=verdict,
        summary=summary,
        comparisons=comparisons,
        prompts=prompts,
        notes=notes,
        sweep=build_sweep_report(base, options),
        concurrency=concurrency,
        replay=build_check_replay(base, runs, comparisons, prompts, options),
    )


class IncompleteCheckError(InputError):
    """A check directory lacks some of its planned traces, or holds one that did not finish."""


def recorded_runs(base: Path, planned: Sequence[PlannedRun], allow_incomplete: bool) -> tuple[list[PlannedRun], list[str]]:
    """The planned runs whose traces a check directory holds, and a note when some are not whole.

    A trace that did not finish (``<path>.partial``) or was never written makes the
    check incomplete: an :class:`IncompleteCheckError`, unless ``allow_incomplete``,
    which keeps the complete rows of the partial traces and says so.
    """
    found: list[PlannedRun] = []
    unfinished: list[str] = []
    missing: list[str] = []
    for run in planned:
        if (base / run.path).is_file():
            found.append(run)
        elif (base / (run.path + PARTIAL_SUFFIX)).is_file():
            unfinished.append(f"{run.name} did not finish ({run.path}{PARTIAL_SUFFIX})")
            found.append(msgspec.structs.replace(run, path=run.path + PARTIAL_SUFFIX))
        else:
            missing.append(run.name)
    if not unfinished and not missing:
        return list(planned), []
    what = "; ".join(unfinished + ([f"{', '.join(missing)} {'was' if len(missing) == 1 else 'were'} not recorded"] if missing else []))
    if not allow_incomplete:
        raise IncompleteCheckError(
            f"{base}: the check is incomplete: {what} (pass --allow-incomplete to report on the complete rows)"
        )
    return found, [f"The check is incomplete: {what}. This report covers the complete rows of {count(len(found), 'trace')} of {len(planned)}."]


def _relative(text: str, base: Path) -> str:
    return text.replace(str(base) + os.sep, "")


def _reference(planned: Sequence[PlannedRun], index: int) -> int | None:
    """The run whose batch-mates ``index``'s are compared with: the in-order run at the
    same batch size (run 0 for the repeats' batch size); None for in-order runs."""
    run = planned[index]
    if run.composition == "in-order":
        return None
    for i, other in enumerate(planned):
        if other.batch_size == run.batch_size and other.composition == "in-order":
            return i
    return None


def _worst(comparisons: list[CheckComparison], divergences: list[CheckDivergence], question: str) -> str | None:
    asked = [i for i, c in enumerate(comparisons) if c.question == question]
    if not asked:
        return None
    found = {d.result.classification for d in divergences if d.comparison in asked}
    return next((c for c in CLASSIFICATIONS if c in found), "identical")


def _stable(prompts: list[CheckPrompt], comparisons: list[CheckComparison], question: str, logprobs: bool) -> int | None:
    asked = {i for i, c in enumerate(comparisons) if c.question == question}
    if not asked:
        return None
    if logprobs and any(comparisons[i].tier2 is None and comparisons[i].tier1 for i in asked):
        return None
    stable = 0
    for prompt in prompts:
        statuses = [d.result.status for d in prompt.divergences if d.comparison in asked]
        if logprobs:
            stable += not statuses
        else:
            stable += not any(s in TIER1_FAILURES for s in statuses)
    return stable


def _summary(comparisons: list[CheckComparison], prompts: list[CheckPrompt], runs: int) -> CheckSummary:
    classes: Counter[str] = Counter()
    for prompt in prompts:
        found = {d.result.classification for d in prompt.divergences}
        classes[next((c for c in CLASSIFICATIONS if c in found), "identical")] += 1
    positions: Counter[int] = Counter()
    for comparison in comparisons:
        for p in comparison.divergence_positions:
            positions[p.index] += p.count
    return CheckSummary(
        runs=runs,
        prompts=len(prompts),
        repeat_tokens_stable=_stable(prompts, comparisons, "repeat", False),
        repeat_logprobs_stable=_stable(prompts, comparisons, "repeat", True),
        batch_tokens_stable=_stable(prompts, comparisons, "batch", False),
        batch_logprobs_stable=_stable(prompts, comparisons, "batch", True),
        classifications={c: classes[c] for c in CLASSIFICATIONS},
        divergence_positions=[PositionCount(index=i, count=n) for i, n in sorted(positions.items())],
    )


def _holds(comparisons: list[CheckComparison], question: str) -> tuple[bool | None, bool | None]:
    asked = [c for c in comparisons if c.question == question]
    if not asked:
        return None, None
    tokens = all(c.tier1 for c in asked)
    if not tokens:
        return False, False
    if any(c.tier2 is None for c in asked):
        return True, None
    return True, all(c.tier2 for c in asked)


_LEVELS = ("none", "tier1", "tier2")


def _verdict(
    settings: CheckSettings,
    determinism: CheckDeterminism,
    comparisons: list[CheckComparison],
    summary: CheckSummary,
    runs: list[CheckRun],
    options: DiffOptions,
) -> CheckVerdict:
    tier1, tier2 = _holds(comparisons, "repeat")
    batch, batch_logprobs = _holds(comparisons, "batch")
    overall = next((c for c in CLASSIFICATIONS if any(x.classification == c for x in comparisons)), "identical")
    observed = "tier2" if tier2 else ("tier1" if tier1 else "none")
    lowered = determinism.mode == "off" or bool(determinism.missing)
    claim = _LEVELS[max(0, _LEVELS.index(observed) - 1)] if lowered else observed
    downgraded = claim != observed
    within = f" (within {options.atol:g})" if options.atol else " (bit for bit)"
    n = summary.prompts
    parts = []
    repeats = [r for r in runs if r.role == "repeat"]
    if tier1 is not None:
        where = f"{count(len(repeats), 'run')} at batch size {repeats[0].batch_size}"
        if settings.isolate:
            where += ", each in a process of its own,"
        parts.append(f"{where} gave the same tokens for {summary.repeat_tokens_stable} of {count(n, 'prompt')} (Tier 1 {'holds' if tier1 else 'fails'}).")
        if tier2 is None and tier1:
            parts.append("The traces record no logprobs, so Tier 2 cannot be judged.")
        elif tier1:
            parts.append(f"Their logprobs agree{within} for {summary.repeat_logprobs_stable} of {n} (Tier 2 {'holds' if tier2 else 'fails'}).")
    else:
        parts.append("One run at the first batch size: repeatability was not tested.")
    sweep = [c for c in comparisons if c.question == "batch"]
    if batch is not None:
        settings_text = ", ".join(runs[c.right].name for c in sweep)
        changed = n - (summary.batch_tokens_stable or 0)
        if batch:
            if batch_logprobs is None:
                tail = ": batch invariant in tokens (no logprobs recorded)."
            elif batch_logprobs:
                tail = f" and its logprobs{within}: batch invariant in tokens and logprobs."
            else:
                changed_logprobs = n - (summary.batch_logprobs_stable or 0)
                tail = f"; the logprobs of {changed_logprobs} of {n} differ: batch invariant in tokens."
            parts.append(f"Against {settings_text}, every prompt kept its tokens{tail}")
        else:
            kinds = Counter(c.classification for c in sweep if not c.tier1)
            listed = ", ".join(f"{k}" for k in CLASSIFICATIONS if kinds.get(k))
            parts.append(
                f"Against {settings_text}, {changed} of {count(n, 'prompt')} changed tokens ({listed}): not batch invariant."
            )
            if tier1 is False:
                parts.append(
                    "The repeats already differ, so differences across batch sizes may be run-to-run "
                    "nondeterminism as much as batch dependence."
                )
    if determinism.mode == "off":
        parts.append("No determinism controls were applied (--mode off).")
    elif determinism.missing:
        parts.append(f"Determinism controls missing: {', '.join(sorted(determinism.missing))}.")
    if downgraded:
        parts.append(
            f"The claim is lowered from {_claim_words(observed)} to {_claim_words(claim)}: runs without every "
            "control can agree here and differ where a missing control matters."
        )
    elif tier1 is not None:
        parts.append(f"This supports {_claim_words(claim)} on this machine with these settings; it is evidence, not proof.")
    return CheckVerdict(
        classification=overall,
        tier1=tier1,
        tier2=tier2,
        batch_invariant=batch,
        batch_invariant_logprobs=batch_logprobs,
        claim=claim,  # type: ignore[arg-type]
        downgraded=downgraded,
        text=" ".join(parts),
    )


def _claim_words(claim: str) -> str:
    return {"tier2": "Tier 2 (repeatable tokens and logprobs)", "tier1": "Tier 1 (repeatable tokens)",
            "none": "no repeatability claim"}[claim]


def _setup_notes(comparisons: list[CheckComparison], runs: list[CheckRun]) -> list[str]:
    """Comparisons whose headers point elsewhere than the question they answer."""
    notes = []
    expected = {"repeat": "run_to_run", "batch": "batch_dependence", "concurrency": "environment"}
    for c in comparisons:
        cause = c.setup.attribution.cause
        if cause != expected[c.question]:
            notes.append(f"{runs[c.right].name} against {runs[c.left].name}: {cause}. {c.setup.attribution.text}")
    return notes


def _neighbour_notes(runs: list[CheckRun], prompts: int) -> list[str]:
    same = [r for r in runs if r.neighbours_changed == 0]
    if not same:
        return []
    names = ", ".join(r.name for r in same)
    return [
        f"{names}: every prompt has the same batch-mates as in the in-order run at its batch size "
        f"(with {count(prompts, 'prompt')}, composition changes positions in the batch, not neighbours)."
    ]


"""``detllm bisect A B``: which of the settings that differ between two runs make them diverge.

A and B are run or check directories (the check's run 0 stands for it). Their
``run_config.json`` files are compared setting by setting; A's settings are rerun with
one of B's values at a time (each rerun a ``detllm run`` in a fresh process), and each
rerun is compared with A's trace by the diff engine. A control rerun of A's own settings
comes first: if it does not reproduce A, reruns are noisy and the evidence says so.
When no single setting reproduces every prompt that diverges between A and B, pairs are
tried next, within ``max_runs``.
"""

from __future__ import annotations

import datetime
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from .._version import __version__
from ..diff import DiffOptions, diff_traces
from ..diff.model import (
    REPORT_FORMAT,
    REPORT_VERSION,
    TIER1_FAILURES,
    BisectBudget,
    BisectDocument,
    BisectObserved,
    BisectRun,
    BisectSide,
    BisectVerdict,
    Producer,
    ReportOptions,
    SettingDifference,
)
from .._numbers import count
from ..errors import DetllmError, UsageError
from ..rundir import TRACE_FILE, TRACES_DIR, PlannedRun, read_run_config
from .backend import Prompt
from .._claim import DirectoryClaim
from .runner import RunConfig

Progress = Callable[[str], None]

IGNORED = ("redact",)
"""Run settings that never change an output: not compared."""

UNSET = None


@dataclass(frozen=True)
class Side:
    directory: Path
    config: RunConfig
    trace: Path
    prompts: list[Prompt]


def read_side(directory: str | os.PathLike[str]) -> Side:
    """A run directory (its trace) or a check directory (its run 0)."""
    base = Path(directory)
    config = read_run_config(base, RunConfig)
    trace = base / (config.check.traces[0].path if config.check is not None else TRACE_FILE)
    assert isinstance(config.settings, RunConfig)
    return Side(directory=base, config=config.settings, trace=trace, prompts=config.prompts)


def _flat(config: RunConfig) -> dict[str, Any]:
    values = msgspec.to_builtins(config)
    options = values.pop("options")
    for name in IGNORED:
        values.pop(name, None)
    values.update(options)
    return values  # type: ignore[no-any-return]


def differences(left: RunConfig, right: RunConfig) -> list[SettingDifference]:
    """Every run setting (backend options included, by name) whose value differs."""
    if left.backend != right.backend:
        raise UsageError(f"A runs the {left.backend} backend and B the {right.backend} backend: bisect compares settings of one backend")
    a, b = _flat(left), _flat(right)
    found = []
    for name in [*a, *(k for k in b if k not in a)]:
        if a.get(name, UNSET) != b.get(name, UNSET):
            found.append(SettingDifference(setting=name, left=a.get(name, UNSET), right=b.get(name, UNSET)))
    return found


def with_settings(config: RunConfig, changes: Sequence[SettingDifference]) -> RunConfig:
    """``config`` with each difference's right-hand value."""
    fields = set(RunConfig.__struct_fields__)
    options = dict(config.options)
    replaced: dict[str, Any] = {}
    for change in changes:
        if change.setting in fields:
            replaced[change.setting] = change.right
        elif change.right is UNSET:
            options.pop(change.setting, None)
        else:
            options[change.setting] = change.right
    return msgspec.structs.replace(config, options=options, **replaced)


def _label(changes: Sequence[SettingDifference]) -> str:
    if not changes:
        return "control"
    return ", ".join(f"{c.setting}={'(unset)' if c.right is UNSET else _text(c.right)}" for c in changes)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _diverging(left: Path, right: Path, options: DiffOptions) -> tuple[list[str], int, str]:
    report = diff_traces(left, right, options.replace(tier=1))
    results = list(report.prompts)
    if options.tier == 1:
        bad = [r.prompt_id for r in results if r.status in TIER1_FAILURES]
    else:
        bad = [r.prompt_id for r in results if r.status != "identical"]
    return bad, len(results), report.classification


def _outcome(reproduced: int, of: int, extra: int) -> str:
    if of and reproduced == of:
        return "reproduces"
    if reproduced:
        return "partial"
    return "elsewhere" if extra else "cleared"


def bisect(
    left: str | os.PathLike[str],
    right: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    run_isolated: Callable[[Path, RunConfig, Sequence[Prompt], PlannedRun], None],
    max_runs: int = 16,
    options: DiffOptions | None = None,
    pairs: bool = True,
    progress: Progress | None = None,
) -> BisectDocument:
    """Rerun A with B's settings, one (then two) at a time, and rank them; ``out`` is
    claimed first, so two commands never write into one directory."""
    with DirectoryClaim(out) as claim:
        return _bisect_in(left, right, claim.directory, run_isolated, max_runs, options, pairs, progress)


def _bisect_in(
    left: str | os.PathLike[str],
    right: str | os.PathLike[str],
    directory: Path,
    run_isolated: Callable[[Path, RunConfig, Sequence[Prompt], PlannedRun], None],
    max_runs: int,
    options: DiffOptions | None,
    pairs: bool,
    progress: Progress | None,
) -> BisectDocument:
    options = options or DiffOptions()
    if max_runs < 1:
        raise UsageError(f"--max-runs must be at least 1, got {max_runs}")
    a, b = read_side(left), read_side(right)
    if [p.id for p in a.prompts] != [p.id for p in b.prompts] or a.prompts != b.prompts:
        raise UsageError(f"{a.directory} and {b.directory} ran different prompts: bisect needs the same prompts on both sides")
    found = differences(a.config, b.config)
    observed_ids, prompts, classification = _diverging(a.trace, b.trace, options)
    observed = BisectObserved(prompts=prompts, divergent=observed_ids, classification=classification)
    (directory / TRACES_DIR).mkdir(parents=True, exist_ok=True)
    target = set(observed_ids)
    runs: list[BisectRun] = []
    used = 0

    def rerun(changes: Sequence[SettingDifference]) -> BisectRun:
        nonlocal used
        used += 1
        name = _label(changes)
        slug = f"rerun-{used:02d}"
        if progress is not None:
            progress(f"[{used}/{max_runs}] {name}")
        config = with_settings(a.config, changes)
        planned = PlannedRun(name=slug, path=f"{TRACES_DIR}/{slug}.jsonl", role="sweep",
                             batch_size=config.batch_size, composition=config.composition)  # fmt: skip
        settings = [c.setting for c in changes]
        try:
            run_isolated(directory, config, a.prompts, planned)
            bad, _, kind = _diverging(a.trace, directory / planned.path, options)
        except DetllmError as exc:
            return BisectRun(settings=settings, name=name, outcome="not_run", reason=str(exc), trace=None,
                             reproduced=0, of=len(target), extra=0, divergent=[], classification=None)  # fmt: skip
        reproduced = len(target & set(bad))
        extra = len(set(bad) - target)
        return BisectRun(settings=settings, name=name, outcome=_outcome(reproduced, len(target), extra), reason=None,  # type: ignore[arg-type]
                         trace=planned.path, reproduced=reproduced, of=len(target), extra=extra, divergent=bad,
                         classification=kind)  # fmt: skip

    control = None
    candidates: list[list[SettingDifference]] = []
    if target and found:
        control = rerun([])
        candidates = [[d] for d in found]
    untried: list[str] = []
    for changes in candidates:
        if used >= max_runs:
            untried.append(_label(changes))
            continue
        runs.append(rerun(changes))
    explained = [r for r in runs if r.outcome == "reproduces"]
    if pairs and target and not explained and len(found) > 1 and not untried:
        ranked = sorted(range(len(found)), key=lambda i: -runs[i].reproduced if i < len(runs) else 0)
        for i, j in itertools.combinations(ranked, 2):
            changes = [found[min(i, j)], found[max(i, j)]]
            if used >= max_runs:
                untried.append(_label(changes))
                continue
            run = rerun(changes)
            runs.append(run)
            if run.outcome == "reproduces":
                break
    ranking = sorted(runs, key=lambda r: (r.outcome == "not_run", -r.reproduced, r.extra, len(r.settings)))
    verdict = _verdict(found, observed, control, ranking, untried)
    document = BisectDocument(
        format=REPORT_FORMAT,
        version=REPORT_VERSION,
        kind="bisect",
        producer=Producer(name="detllm", version=__version__),
        options=ReportOptions.of(options),
        left=BisectSide(directory=str(a.directory), trace=str(a.trace)),
        right=BisectSide(directory=str(b.directory), trace=str(b.trace)),
        differences=found,
        observed=observed,
        control=control,
        ranking=ranking,
        budget=BisectBudget(max_runs=max_runs, used=used, untried=untried),
        verdict=verdict,
    )
    return document


def _verdict(
    found: list[SettingDifference],
    observed: BisectObserved,
    control: BisectRun | None,
    ranking: list[BisectRun],
    untried: list[str],
) -> BisectVerdict:
    n = len(observed.divergent)
    if not n:
        return BisectVerdict(explained_by=None, text=f"A and B agree on all {count(observed.prompts, 'prompt')}: nothing to bisect.")
    if not found:
        return BisectVerdict(
            explained_by=None,
            text=f"A and B diverge on {n} of {count(observed.prompts, 'prompt')} with the same run settings: "
            "the cause is outside them (the environment, the machine, run-to-run nondeterminism).",
        )
    parts = [f"A and B diverge on {n} of {count(observed.prompts, 'prompt')}; {count(len(found), 'setting')} differ."]
    if control is not None and control.outcome != "cleared":
        parts.append(
            f"The control rerun of A's own settings already diverges from A on {len(control.divergent)} prompts "
            f"({control.outcome if control.outcome != 'not_run' else 'not run: ' + str(control.reason)}): "
            "reruns are not repeatable here, so weigh every result below with that."
        )
    best = next((r for r in ranking if r.outcome == "reproduces"), None)
    for r in ranking:
        if r.outcome in ("reproduces", "partial"):
            alone = " alone" if len(r.settings) == 1 else " together"
            extra = f" (and {count(r.extra, 'other prompt')})" if r.extra else ""
            parts.append(f"{r.name}{alone} reproduces {r.reproduced} of {r.of} diverging prompts{extra}.")
    cleared = [r.name for r in ranking if r.outcome == "cleared"]
    if cleared:
        parts.append(f"Cleared (no prompt diverges with it alone): {', '.join(cleared)}.")
    elsewhere = [r.name for r in ranking if r.outcome == "elsewhere"]
    if elsewhere:
        parts.append(f"Diverging only on other prompts: {', '.join(elsewhere)}.")
    failed = [r for r in ranking if r.outcome == "not_run"]
    for r in failed:
        parts.append(f"{r.name}: not run ({r.reason}).")
    if untried:
        parts.append(f"Not tried within --max-runs: {', '.join(untried)}.")
    if best is None:
        parts.append("No setting or pair of settings tried reproduces every diverging prompt.")
    return BisectVerdict(explained_by=list(best.settings) if best is not None else None, text=" ".join(parts))


def default_out() -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path("bisect") / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path("bisect") / f"{stamp}-{n}"
    return path

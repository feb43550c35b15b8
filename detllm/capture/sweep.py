"""``detllm check --sweep``: the baseline run again with engine settings changed.

Each variant changes one swept setting to one of its values (``one-at-a-time``, the
default) or sets every swept setting (``grid``: the cross product). A variant whose
settings need a new engine runs as ``detllm run`` in a fresh process, the way
``--isolate`` runs repeats; the others run in the check's process with a new session.
After each run the settings the engine applied are read back from the header of the
trace it wrote: a value the engine did not apply makes the variant ``not_applied``
(never a pass), and a setting the platform lacks makes it ``not_run``, with the reason.

``enable_prefix_caching=true`` on vLLM runs the prompts twice on one engine, cold then
warm, and keeps vLLM's count of cached prompt tokens for each (``_prefix_probe.py``).
What all of this shows is judged offline from ``sweep.json`` and the traces
(:func:`detllm.diff.build_check_report`, through ``detllm/diff/_sweep.py``).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..errors import CaptureError, DetllmError, UsageError
from ..reader import open_trace
from ..rundir import ISOLATED_DIR, TRACES_DIR, PlannedRun, write_document, write_file
from ..diff.inputs import SWEEP_FILE
from ..diff.model import SWEEP_MODES, PrefixCounters, SweepRecord, SweepTrace, SweepVariantRecord
from ..trace import Header
from ._sweep_settings import PREFIX_CACHE, SETTINGS, Setting, parse_sweep  # SETTINGS: for --sweep's help
from .backend import Prompt
from .prompts import prompt_lines
from .runner import CaptureSession, RunConfig

Progress = Callable[[int, int, str, str], None]


@dataclass(frozen=True)
class Variant:
    """One variant of the baseline: the settings it asks for and the run settings they give."""

    name: str
    values: tuple[tuple[Setting, Any], ...]
    config: RunConfig
    changes: dict[str, Any]

    @property
    def fresh_engine(self) -> bool:
        return any(s.fresh_engine for s, _ in self.values)

    @property
    def probes_prefix_cache(self) -> bool:
        return self.config.backend == "vllm" and any(s.name == PREFIX_CACHE and v is True for s, v in self.values)

    @property
    def slug(self) -> str:
        text = "-".join(f"{s.name}-{_text(v)}" for s, v in self.values)
        return "sweep-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _text(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def apply(config: RunConfig, values: Sequence[tuple[Setting, Any]]) -> tuple[RunConfig, dict[str, Any]]:
    """``config`` with ``values`` set, and what changed (``dtype``, ``threads``, ``options``)."""
    options = dict(config.options)
    changes: dict[str, Any] = {}
    replaced: dict[str, Any] = {}
    for setting, value in values:
        if setting.where == "dtype":
            replaced["dtype"] = changes["dtype"] = value
        elif setting.where == "threads":
            replaced["threads"] = changes["threads"] = value
        else:
            extra = {setting.name: value, **setting.companions(value, config.options)}
            options.update(extra)
            changes.setdefault("options", {}).update(extra)
    return msgspec.structs.replace(config, options=options, **replaced), changes


def plan_sweep(config: RunConfig, sweeps: Sequence[str], mode: str = "one-at-a-time") -> list[Variant]:
    """The variants of ``config`` that ``--sweep KEY=V1,V2`` items ask for."""
    if mode not in SWEEP_MODES:
        raise UsageError(f"unknown sweep mode {mode!r} (choose from {', '.join(SWEEP_MODES)})")
    parsed = [parse_sweep(item, config.backend) for item in sweeps]
    names = [s.name for s, _ in parsed]
    repeated = next((n for n in names if names.count(n) > 1), None)
    if repeated is not None:
        raise UsageError(f"--sweep {repeated} given twice: list every value in one --sweep {repeated}=V1,V2")
    if mode == "grid":
        combinations = [tuple(zip((s for s, _ in parsed), combo)) for combo in itertools.product(*(v for _, v in parsed))]
    else:
        combinations = [((s, v),) for s, values in parsed for v in values]
    variants = []
    for values in combinations:
        variant_config, changes = apply(config, values)
        name = ", ".join(f"{s.name}={_text(v)}" for s, v in values)
        variants.append(Variant(name=name, values=values, config=variant_config, changes=changes))
    return variants


def _header(path: Path) -> Header:
    with open_trace(path, verify_digest=False, check_rows=False) as trace:
        return trace.header


def _applied(variant: Variant, header: Header) -> tuple[dict[str, Any], str | None]:
    """What the engine reports for each swept setting and companion option; the first mismatch."""
    applied: dict[str, Any] = {}
    problem = None
    for setting, value in variant.values:
        got = applied[setting.name] = setting.read_back(header)
        if not setting.matches(got, value) and problem is None:
            problem = f"{setting.name}={_text(value)} asked for, but the engine reports {_text(got)}"
    requested = variant.changes.get("options", {})
    for key, value in requested.items():
        if key in applied:
            continue
        got = applied[key] = header.backend_settings.get(key)
        if got != value and problem is None:
            problem = f"{key}={_text(value)} asked for, but the engine reports {_text(got)}"
    return applied, problem


def _is_baseline(variant: Variant, header: Header) -> bool:
    """The baseline already runs with every value (companion options included)."""
    if not all(s.matches(s.read_back(header), v) for s, v in variant.values):
        return False
    swept = {s.name for s, _ in variant.values}
    companions = {k: v for k, v in variant.changes.get("options", {}).items() if k not in swept}
    return all(header.backend_settings.get(k) == v for k, v in companions.items())


def run_sweep(
    directory: Path,
    baseline: str,
    variants: Sequence[Variant],
    prompts: Sequence[Prompt],
    mode: str,
    run_isolated: Callable[[Path, RunConfig, Sequence[Prompt], PlannedRun], None],
    progress: Progress | None = None,
) -> SweepRecord:
    """Run every variant after the baseline trace ``baseline`` (relative to ``directory``)
    has been recorded; write and return ``sweep.json``."""
    base_header = _header(directory / baseline)
    records: list[SweepVariantRecord] = []
    for index, variant in enumerate(variants):
        if progress is not None:
            progress(index, len(variants), variant.slug, variant.name)
        records.append(_run_variant(directory, base_header, variant, prompts, run_isolated))
        record = SweepRecord(mode=mode, baseline=baseline, variants=records)  # type: ignore[arg-type]
        write_document(directory / SWEEP_FILE, record)  # after each variant: an interrupted sweep keeps what ran
    record = SweepRecord(mode=mode, baseline=baseline, variants=records)  # type: ignore[arg-type]
    write_document(directory / SWEEP_FILE, record)
    return record


def _run_variant(
    directory: Path,
    base_header: Header,
    variant: Variant,
    prompts: Sequence[Prompt],
    run_isolated: Callable[[Path, RunConfig, Sequence[Prompt], PlannedRun], None],
) -> SweepVariantRecord:
    common: dict[str, Any] = {
        "name": variant.name,
        "settings": {s.name: v for s, v in variant.values},
        "changes": variant.changes,
        "fresh_process": variant.fresh_engine,
    }
    for setting, _ in variant.values:
        reason = setting.unsupported(base_header)
        if reason is not None:
            return SweepVariantRecord(status="not_run", reason=reason, **common)
    if not variant.probes_prefix_cache and _is_baseline(variant, base_header):
        return SweepVariantRecord(status="baseline", reason="the baseline already runs with these values", **common)
    batch_size = base_header.batch.size
    try:
        if variant.probes_prefix_cache:
            traces, counters = _probe_prefix_cache(directory, variant, prompts, batch_size)
        else:
            trace = SweepTrace(name=variant.slug, path=f"{TRACES_DIR}/{variant.slug}.jsonl", role="run")
            planned = PlannedRun(name=variant.slug, path=trace.path, role="sweep", batch_size=batch_size, composition="in-order")
            config = msgspec.structs.replace(variant.config, batch_size=batch_size, composition="in-order")
            if variant.fresh_engine:
                run_isolated(directory, config, prompts, planned)
            else:
                _run_here(directory, config, prompts, planned)
            traces, counters = [trace], None
    except DetllmError as exc:
        return SweepVariantRecord(status="not_run", reason=str(exc), **common)
    applied: dict[str, Any] = {}
    problem = None
    for trace in traces:
        applied, problem = _applied(variant, _header(directory / trace.path))
        if problem is not None:
            break
    status = "not_applied" if problem is not None else "run"
    return SweepVariantRecord(
        status=status, reason=problem, applied=applied, traces=traces, prefix_cache=counters, **common  # type: ignore[arg-type]
    )


def _run_here(directory: Path, config: RunConfig, prompts: Sequence[Prompt], run: PlannedRun) -> None:
    """A variant that needs no new engine, in this process, with its own session."""
    with CaptureSession.of(config) as session:
        session.capture(
            prompts,
            config.decoding(),
            batch_size=run.batch_size,
            composition=run.composition,
            top_logprobs=config.top_logprobs,
            logprobs=config.logprobs,
            path=directory / run.path,
            keep_rows=False,
        )


def _probe_prefix_cache(
    directory: Path, variant: Variant, prompts: Sequence[Prompt], batch_size: int
) -> tuple[list[SweepTrace], PrefixCounters]:
    """Cold then warm on one fresh engine, in a process of its own (``_prefix_probe``)."""
    options = {**variant.config.options, "reset_prefix_cache": False}
    config = msgspec.structs.replace(variant.config, options=options, batch_size=batch_size, composition="in-order")
    scratch = directory / ISOLATED_DIR / variant.slug
    scratch.mkdir(parents=True, exist_ok=True)
    write_file(scratch / "prompts.jsonl", prompt_lines(prompts))
    write_file(scratch / "config.json", msgspec.json.encode(config))
    traces = [
        SweepTrace(name=f"{variant.slug}-{role}", path=f"{TRACES_DIR}/{variant.slug}-{role}.jsonl", role=role)  # type: ignore[arg-type]
        for role in ("cold", "warm")
    ]
    command = [sys.executable, "-m", "detllm.capture._prefix_probe", str(scratch), *(str(directory / t.path) for t in traces)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    finished = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if finished.returncode != 0:
        lines = [line for line in finished.stderr.decode(errors="replace").splitlines() if line.strip()]
        message = lines[-1].removeprefix("detllm: ") if lines else f"exit status {finished.returncode}"
        raise CaptureError(f"{variant.name}, the prefix-cache probe in a process of its own: {message}")
    counters = msgspec.json.decode((scratch / "prefix_cache.json").read_bytes(), type=PrefixCounters)
    return traces, counters

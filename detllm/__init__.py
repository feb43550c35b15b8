"""detLLM: is this LLM inference setup reproducible? If not, where and why.

The trace format and its reader, writer and validator need only orjson and msgspec;
capture backends import torch, transformers or vLLM when they run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_names
from ._version import __version__
from .errors import (
    CaptureError,
    DeterminismUnavailableError,
    DetllmError,
    ExitCode,
    IncompleteTraceError,
    InputError,
    NewerMinorVersionWarning,
    PromptFileError,
    RunDirectoryError,
    TraceFormatError,
    UnsupportedVersionError,
    UsageError,
)
from .reader import TraceReader, open_trace, read_header
from .rundir import Prompt
from .trace import (
    Artifact,
    Batch,
    Decoding,
    Determinism,
    Environment,
    Footer,
    Header,
    Logprobs,
    Placement,
    Replay,
    Row,
    Software,
)
from .validate import Finding, ValidationResult, validate_trace
from .writer import TraceWriter, write_trace
from .diff import DiffOptions, aggregate_traces, diff_traces
from .diff.model import AggregateReport, CheckReport, DiffReport
from .report import load_report, render_html, render_json, render_markdown, render_text, write_report_dir

if TYPE_CHECKING:
    from .capture.check import CheckResult, Progress
    from .capture.env import EnvSnapshot
    from .capture.registry import BackendConfig
    from .capture.replay import ReplayResult
    from .capture.runner import CaptureSession, RunResult
    from .diff.model import ReplayDocument

__getattr__ = lazy_names(__name__, {"BackendConfig": ".capture.registry", "CaptureSession": ".capture.runner"})
"""Capture names exported without importing capture until they are first used."""


def run(
    model: str,
    prompts: Sequence[str | Prompt] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> RunResult:
    """Run ``model`` on ``prompts`` and return the trace (see ``docs/python_api.md``).

    ``prompts``: texts (ids ``p1``, ``p2``, ...) or :class:`~detllm.capture.backend.Prompt`
    objects; None runs the built-in prompt set. ``out``: a run directory to write,
    as ``detllm run --out`` does; None writes nothing. ``settings`` are the fields
    of :class:`~detllm.capture.runner.RunConfig` (``batch_size=8``, ``do_sample=True``,
    ``mode="strict"`` ...). Global state changed by the determinism controls is
    restored before returning.
    """
    from .capture.runner import RunConfig, as_prompts
    from .capture.runner import run as run_capture

    try:
        config = RunConfig(model=model, **settings)
    except TypeError as exc:
        raise UsageError(f"detllm.run: {exc}") from None
    return run_capture(config, as_prompts(prompts), out=out)


def check(
    model: str,
    prompts: Sequence[str | Prompt] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    runs: int = 2,
    batch_sizes: Sequence[int] = (1, 8),
    compositions: Sequence[str] | None = None,
    isolate: bool = False,
    tier: int = DiffOptions.tier,
    atol: float = DiffOptions.atol,
    progress: Progress | None = None,
    replay: bool = False,
    sweep: Sequence[str] = (),
    sweep_mode: str = "one-at-a-time",
    concurrency: Sequence[int] = (1, 8),
    prefix_cache_probe: bool = False,
    **settings: Any,
) -> CheckResult:
    """Repeat runs and sweep batch sizes on one loaded model (see ``docs/python_api.md``).

    Runs ``prompts`` ``runs`` times at ``batch_sizes[0]``, then at every other batch
    size, and at every batch size above 1 in ``compositions`` too (None: ``reversed``
    and a shuffle that gives most prompts other batch-mates). Returns a
    :class:`~detllm.capture.check.CheckResult`: Tier 1, Tier 2, batch invariance, the
    per-prompt results and the report. ``out``: the check directory to write; None
    keeps nothing on disk. ``settings`` are the fields of
    :class:`~detllm.capture.runner.RunConfig` other than ``batch_size`` and
    ``composition``. ``sweep`` / ``sweep_mode``: ``--sweep KEY=V1,V2`` items and
    ``--sweep-mode``. With ``backend="openai"`` (``options={"base_url": URL}``) it is a
    server check: ``runs`` at each ``concurrency`` level, ``prefix_cache_probe`` as
    ``--prefix-cache-probe``; batch sizes, compositions, isolation, replay and sweeps
    are an in-process check's and are refused there.
    """
    from .capture.check import check as run_check
    from .capture.runner import RunConfig, as_prompts

    for name in ("batch_size", "composition"):
        if name in settings:
            raise UsageError(f"detllm.check: {name} is not a setting of a check; use batch_sizes and compositions")
    try:
        config = RunConfig(model=model, **settings)
    except TypeError as exc:
        raise UsageError(f"detllm.check: {exc}") from None
    if config.backend == "openai":
        return _server_check(config, as_prompts(prompts), out=out, runs=runs, tier=tier, atol=atol, progress=progress,
                             concurrency=concurrency, prefix_cache_probe=prefix_cache_probe,
                             in_process={"batch_sizes": tuple(batch_sizes) != (1, 8), "compositions": compositions is not None,
                                         "isolate": isolate, "replay": replay, "sweep": bool(sweep)})
    if prefix_cache_probe or tuple(concurrency) != (1, 8):
        given = "prefix_cache_probe" if prefix_cache_probe else "concurrency"
        raise UsageError(f"detllm.check: {given} applies to backend='openai' only (a server check)")
    return run_check(
        config,
        as_prompts(prompts),
        runs=runs,
        batch_sizes=batch_sizes,
        compositions=compositions,
        isolate=isolate,
        tier=tier,
        atol=atol,
        out=out,
        progress=progress,
        sweep=sweep,
        sweep_mode=sweep_mode,
        replay=replay,
    )


def _server_check(config: Any, prompts: Any, *, out: Any, runs: int, tier: int, atol: float, progress: Any,
                  concurrency: Sequence[int], prefix_cache_probe: bool, in_process: dict[str, bool]) -> CheckResult:
    """``detllm.check`` against a server: the concurrency check of ``detllm check --backend openai``."""
    from .capture.concurrency import ServerCheck, parse_levels, server_check

    refused = [name for name, given in in_process.items() if given]
    if refused:
        raise UsageError(f"detllm.check: {refused[0]} needs an in-process backend (hf or vllm), not backend='openai'; "
                         "a server check takes runs, concurrency and prefix_cache_probe")
    asked = ServerCheck(runs=runs, levels=tuple(parse_levels(concurrency)), tier=tier, atol=atol,
                        prefix_cache_probe=prefix_cache_probe)
    return server_check(config, prompts, asked, out=out, progress=progress)  # type: ignore[no-any-return]


def replay(
    trace: str | os.PathLike[str],
    model: str,
    *,
    out: str | os.PathLike[str],
    top_k: int | None = None,
    **settings: Any,
) -> ReplayResult:
    """Replay ``trace``'s tokens under ``model`` and ``settings`` (teacher forcing; see
    ``docs/replay.md``) and write the replay trace to ``out`` (a ``.jsonl``/``.jsonl.gz``
    file, or a directory to create). ``settings`` are the fields of
    :class:`~detllm.capture.runner.RunConfig` that make a setup (``backend``, ``dtype``,
    ``device``, ``batch_size``, ``options``, ``mode`` ...); ``top_k``: alternatives per
    position (None: the trace's own).
    """
    from .capture.replay import replay as run_replay
    from .capture.runner import RunConfig

    try:
        config = RunConfig(model=model, **settings)
    except TypeError as exc:
        raise UsageError(f"detllm.replay: {exc}") from None
    return run_replay(trace, config, out=out, top_k=top_k)


def replay_report(original: str | os.PathLike[str], replay: str | os.PathLike[str]) -> ReplayDocument:
    """Compare ``original`` with a replay of it at every position (what ``detllm diff
    ORIGINAL REPLAY`` reports; kind ``replay`` in ``formats/report-v1.md``).

    Raises :class:`~detllm.errors.UsageError` when ``replay`` is not a replay of ``original``.
    """
    from .diff.inputs import NotAReplay
    from .diff import build_replay_report

    try:
        return build_replay_report(original, replay)
    except NotAReplay as error:
        raise UsageError(error.reason) from None


def env(*, redact: Sequence[str] = (), use_torch: bool = True) -> EnvSnapshot:
    """The environment snapshot that ``detllm env`` prints (see ``docs/python_api.md``)."""
    from .capture.env import capture_environment, parse_redactions

    return capture_environment(redact=parse_redactions(",".join(redact)), use_torch=use_torch)


__all__ = [
    "AggregateReport",
    "Artifact",
    "BackendConfig",
    "Batch",
    "CaptureError",
    "CaptureSession",
    "CheckReport",
    "Decoding",
    "Determinism",
    "DeterminismUnavailableError",
    "DetllmError",
    "DiffOptions",
    "DiffReport",
    "Environment",
    "ExitCode",
    "Finding",
    "Footer",
    "Header",
    "IncompleteTraceError",
    "InputError",
    "Logprobs",
    "NewerMinorVersionWarning",
    "Placement",
    "Prompt",
    "PromptFileError",
    "Replay",
    "Row",
    "RunDirectoryError",
    "Software",
    "TraceFormatError",
    "TraceReader",
    "TraceWriter",
    "UnsupportedVersionError",
    "UsageError",
    "ValidationResult",
    "__version__",
    "aggregate_traces",
    "check",
    "diff_traces",
    "env",
    "load_report",
    "open_trace",
    "read_header",
    "replay",
    "replay_report",
    "render_html",
    "render_json",
    "render_markdown",
    "render_text",
    "run",
    "validate_trace",
    "write_report_dir",
    "write_trace",
]

"""The Python API's capture functions, as ``detllm`` exports them (see ``docs/python_api.md``).

``detllm.run``, ``detllm.check``, ``detllm.replay``, ``detllm.replay_report`` and
``detllm.env`` are these functions; ``import detllm`` loads this module when one is first
used, and each imports its backend (torch, transformers or vLLM) only when called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..diff import DiffOptions
from ..errors import UsageError
from ..rundir import Prompt

if TYPE_CHECKING:
    from ..diff.model import ReplayDocument
    from .check import CheckResult, Progress
    from .env import EnvSnapshot
    from .replay import ReplayResult
    from .runner import RunResult


def _server_dtype(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with a server's dtype unknown unless given: servers do not report theirs."""
    if settings.get("backend") == "openai" and "dtype" not in settings:
        from .openai import SERVER_DTYPE

        return {**settings, "dtype": SERVER_DTYPE}
    return settings


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
    from .runner import RunConfig, as_prompts
    from .runner import run as run_capture

    try:
        config = RunConfig(model=model, **_server_dtype(settings))
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
    ``--prefix-cache-probe``, ``replay`` as ``--replay`` (each divergence scored at both
    levels); batch sizes, compositions, isolation and sweeps are an in-process check's and
    are refused there.
    """
    from .check import check as run_check
    from .runner import RunConfig, as_prompts

    for name in ("batch_size", "composition"):
        if name in settings:
            raise UsageError(f"detllm.check: {name} is not a setting of a check; use batch_sizes and compositions")
    try:
        config = RunConfig(model=model, **_server_dtype(settings))
    except TypeError as exc:
        raise UsageError(f"detllm.check: {exc}") from None
    if config.backend == "openai":
        return _server_check(config, as_prompts(prompts), out=out, runs=runs, tier=tier, atol=atol, progress=progress,
                             concurrency=concurrency, prefix_cache_probe=prefix_cache_probe, replay=replay,
                             in_process={"batch_sizes": tuple(batch_sizes) != (1, 8), "compositions": compositions is not None,
                                         "isolate": isolate, "sweep": bool(sweep)})
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
                  concurrency: Sequence[int], prefix_cache_probe: bool, replay: bool, in_process: dict[str, bool]) -> CheckResult:
    """``detllm.check`` against a server: the concurrency check of ``detllm check --backend openai``."""
    from .concurrency import ServerCheck, parse_levels, server_check

    refused = [name for name, given in in_process.items() if given]
    if refused:
        raise UsageError(f"detllm.check: {refused[0]} needs an in-process backend (hf or vllm), not backend='openai'; "
                         "a server check takes runs, concurrency, prefix_cache_probe and replay")
    asked = ServerCheck(runs=runs, levels=tuple(parse_levels(concurrency)), tier=tier, atol=atol,
                        prefix_cache_probe=prefix_cache_probe, replay=replay)
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
    from .replay import replay as run_replay
    from .runner import RunConfig

    try:
        config = RunConfig(model=model, **_server_dtype(settings))
    except TypeError as exc:
        raise UsageError(f"detllm.replay: {exc}") from None
    return run_replay(trace, config, out=out, top_k=top_k)


def replay_report(original: str | os.PathLike[str], replay: str | os.PathLike[str]) -> ReplayDocument:
    """Compare ``original`` with a replay of it at every position (what ``detllm diff
    ORIGINAL REPLAY`` reports; kind ``replay`` in ``formats/report-v1.md``).

    Raises :class:`~detllm.errors.UsageError` when ``replay`` is not a replay of ``original``.
    """
    from ..diff.inputs import NotAReplay
    from ..diff import build_replay_report

    try:
        return build_replay_report(original, replay)
    except NotAReplay as error:
        raise UsageError(error.reason) from None


def env(*, redact: Sequence[str] = (), use_torch: bool = True) -> EnvSnapshot:
    """The environment snapshot that ``detllm env`` prints (see ``docs/python_api.md``)."""
    from .env import capture_environment, parse_redactions

    return capture_environment(redact=parse_redactions(",".join(redact)), use_torch=use_torch)

"""Runs and checks against a server: requests in flight instead of batches.

A server batches requests as it likes; what a client controls is how many are in
flight at once. :func:`capture_level` sends every prompt ``len(runs)`` times with
``level`` requests in flight (repeats of one prompt may be in flight together) and
writes one trace per repeat. :func:`server_check` does that at each level, and the
check report answers Tier 1 and Tier 2 at the first level and concurrency invariance
over all of them. :func:`server_run` is ``detllm run --backend openai``.

A failure (the server refused, died, timed out, answered nonsense, or Ctrl-C) ends
the capture with one line naming the URL; every row received so far is kept in the
traces' ``.partial`` files, which have no footer and so never read as complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .._claim import CLAIM_FILE, DirectoryClaim
from ..diff import DiffOptions, build_check_report, diff_traces
from ..errors import CaptureError, UsageError
from ..report import write_report_dir
from ..diff.inputs import read_determinism
from ..rundir import (
    write_document,
    write_file,
    DETERMINISM_FILE,
    ENV_FILE,
    RUN_CONFIG_FILE,
    TRACES_DIR,
    TRACE_FILE,
    CheckPlan,
    PlannedRun,
    run_config_document,
)
from ..diff.model import CheckSettings
from ..trace import Batch, Decoding, Row
from ..writer import TraceWriter, canonical_row
from .backend import Prompt
from .openai import REDACTED, OpenAIBackend, run_pool
from .prompts import PromptList, checked_prompts
from .runner import (
    CaptureSession,
    RunConfig,
    RunResult,
)

PREFIX_CACHE_FILE = "prefix_cache.json"
Progress = Callable[[int, int, str, str], None]


def parse_levels(text: str | Sequence[int]) -> list[int]:
    """``"1,8,64"`` -> ``[1, 8, 64]``; distinct integers >= 1."""
    if isinstance(text, str):
        try:
            levels = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"--concurrency: expected integers separated by commas, got {text!r}") from None
    else:
        levels = [int(level) for level in text]
    if not levels:
        raise UsageError("--concurrency: give at least one level")
    if any(level < 1 for level in levels):
        raise UsageError(f"--concurrency: a level must be at least 1, got {min(levels)}")
    if len(set(levels)) != len(levels):
        raise UsageError(f"--concurrency: levels must be distinct, got {','.join(map(str, levels))}")
    return levels


def plan_levels(runs: int, levels: Sequence[int]) -> list[PlannedRun]:
    """``c1-run0`` ... the repeats at the first level, then every other level's runs."""
    planned = []
    for i, level in enumerate(levels):
        for repeat in range(runs):
            name = f"c{level}-run{repeat}"
            planned.append(
                PlannedRun(name=name, path=f"{TRACES_DIR}/{name}.jsonl", role="repeat" if i == 0 else "concurrency",
                           batch_size=1, composition="in-order", repeat=repeat, concurrency=level)
            )
    return planned


def _redacted(config: RunConfig) -> RunConfig:
    if "url" not in config.redact or "base_url" not in config.options:
        return config
    return msgspec.structs.replace(config, options={**config.options, "base_url": REDACTED})


def _redacted_argv(config: RunConfig, argv: Sequence[str] | None) -> list[str] | None:
    """The command line with the base URL left out, when ``--redact url`` asks for it."""
    if argv is None or "url" not in config.redact:
        return list(argv) if argv is not None else None
    url = str(config.options.get("base_url", ""))
    return [arg.replace(url, REDACTED) if url else arg for arg in argv]


def _session(config: RunConfig) -> CaptureSession:
    backend_config = config.backend_config()
    if "url" in config.redact:
        backend_config = dataclasses.replace(backend_config, options={**backend_config.options, "redact_url": True})
    return CaptureSession.of(config, backend_config)


def _document(config: RunConfig, prompts: Sequence[Prompt], argv: Sequence[str] | None) -> dict[str, Any]:
    return run_config_document(_redacted(config), prompts, _redacted_argv(config, argv))


@dataclass
class LevelResult:
    """What one level's capture measured besides its traces."""

    cached_tokens: dict[tuple[int, str], int | None]
    """(repeat, prompt id) -> the server's ``cached_tokens`` (None: not reported)."""


def capture_level(
    session: CaptureSession,
    prompts: Sequence[Prompt],
    decoding: Decoding,
    *,
    level: int,
    paths: Sequence[Path],
    top_logprobs: int,
    logprobs: str,
    labels: Sequence[dict[str, str]],
    on_row: Callable[[], None] | None = None,
) -> LevelResult:
    """Every prompt ``len(paths)`` times with ``level`` requests in flight; trace ``i`` gets repeat ``i``."""
    backend = session.backend
    if not isinstance(backend, OpenAIBackend):
        raise UsageError("requests in flight apply to --backend openai only")
    resolved = backend.resolve_decoding(decoding)
    backend.concurrency = level
    session.controls.reseed()
    headers = [session._header(resolved, Batch(size=1), top_logprobs, logprobs, label) for label in labels]
    writers = [TraceWriter(path, header) for path, header in zip(paths, headers)]
    waiting: list[dict[int, Row]] = [{} for _ in paths]
    next_index = [0] * len(paths)
    jobs = [(repeat, index) for repeat in range(len(paths)) for index in range(len(prompts))]
    cached: dict[tuple[int, str], int | None] = {}
    received = 0

    def work(job: tuple[int, int]) -> tuple[Row, int | None]:
        return backend.request(prompts[job[1]], resolved, top_logprobs)

    try:
        for job_index, (row, tokens) in run_pool(jobs, level, work):
            repeat, index = jobs[job_index]
            received += 1
            cached[(repeat, prompts[index].id)] = tokens
            waiting[repeat][index] = canonical_row(row)
            while next_index[repeat] in waiting[repeat]:
                writers[repeat].write(waiting[repeat].pop(next_index[repeat]))
                next_index[repeat] += 1
            if on_row is not None:
                on_row()
    except BaseException as exc:
        # Keep every row received: those still waiting for an earlier prompt go out of order.
        for writer, rows in zip(writers, waiting):
            for index in sorted(rows):
                writer.write(rows[index])
            writer.abandon()
        if isinstance(exc, KeyboardInterrupt):
            raise CaptureError(
                f"{backend.client.url(backend.endpoint)}: interrupted (Ctrl-C) after {received} of {len(jobs)} requests; "
                f"the rows received are kept in {paths[0].parent}/*.partial"
            ) from None
        if isinstance(exc, CaptureError) and received:
            raise CaptureError(f"{exc} (after {received} of {len(jobs)} requests; the rows received are kept in *.partial)") from None
        raise
    for writer in writers:
        writer.close()
    return LevelResult(cached_tokens=cached)


def _retry_warnings(session: CaptureSession) -> list[str]:
    backend = session.backend
    retries = getattr(getattr(backend, "client", None), "retries", {})
    done = {k: v for k, v in retries.items() if v}
    if not done:
        return []
    listed = ", ".join(f"{n} after {k.replace('_', ' ')}" for k, n in done.items())
    return [f"The client retried requests: {listed} (see backend_settings.retries for the policy)."]


def server_run(config: RunConfig, prompts: Sequence[Prompt], *, concurrency: int = 1,
               out: str | os.PathLike[str] | None = None, argv: Sequence[str] | None = None) -> RunResult:
    """``detllm run --backend openai``: every prompt once, ``concurrency`` requests in flight."""
    prompts = checked_prompts(prompts)
    parse_levels([concurrency])
    if out is None:
        return _server_run(config, prompts, concurrency, None, argv)
    with DirectoryClaim(out) as claim:
        try:
            return _server_run(config, prompts, concurrency, claim.directory, argv)
        except BaseException:
            if claim.created and not (claim.directory / TRACE_FILE).exists():
                for name in (RUN_CONFIG_FILE, ENV_FILE, DETERMINISM_FILE):  # nothing recorded: nothing left
                    (claim.directory / name).unlink(missing_ok=True)
            raise


def _server_run(config: RunConfig, prompts: PromptList, concurrency: int, directory: Path | None,
                argv: Sequence[str] | None) -> RunResult:
    session = _session(config)
    with session:
        scratch = None
        if directory is None:
            scratch = tempfile.mkdtemp(prefix="detllm-run-")
            target = Path(scratch)
        else:
            target = directory
            target.mkdir(parents=True, exist_ok=True)
            write_document(target / RUN_CONFIG_FILE, _document(config, prompts, argv))
            write_file(target / ENV_FILE, session.environment.to_json())
            write_document(target / DETERMINISM_FILE, session.determinism.to_dict())
        try:
            capture_level(session, prompts, config.decoding(), level=concurrency, paths=[target / TRACE_FILE],
                          top_logprobs=config.top_logprobs, logprobs=config.logprobs, labels=[{}])
            from ..reader import open_trace

            with open_trace(target / TRACE_FILE) as trace:
                header, rows = trace.header, list(trace)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    return RunResult(config=config, header=header, rows=rows, determinism=session.determinism,
                     environment=session.environment, directory=directory)


@dataclass(frozen=True)
class ServerCheck:
    """What a server check asks for, besides the run settings."""

    runs: int = 2
    levels: tuple[int, ...] = (1, 8)
    tier: int = DiffOptions.tier
    atol: float = DiffOptions.atol
    prefix_cache_probe: bool = False
    replay: bool = False
    """Replay both sides of every divergence at both levels (``--replay``)."""


def server_check(
    config: RunConfig,
    prompts: Sequence[Prompt],
    asked: ServerCheck,
    *,
    out: str | os.PathLike[str] | None = None,
    argv: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Any:
    """``detllm check --backend openai``: the check directory and its report (a CheckResult)."""
    prompts = checked_prompts(prompts)
    if asked.runs < 1:
        raise UsageError(f"runs must be at least 1, got {asked.runs}")
    if asked.replay and config.options.get("chat"):
        raise UsageError("--replay scores forced tokens through /v1/completions, which --chat leaves; drop one of them")
    levels = parse_levels(list(asked.levels))
    planned = plan_levels(asked.runs, levels)
    if len(planned) < 2:
        raise UsageError("nothing to compare: one run at one level; ask for --runs 2 or more, or another --concurrency level")
    plan = CheckPlan(runs=asked.runs, batch_sizes=[1], compositions=[], tier=asked.tier, atol=asked.atol,  # type: ignore[arg-type]
                     traces=planned, concurrency=levels)
    if out is None:
        return _server_check(config, prompts, asked, plan, planned, levels, Path(tempfile.mkdtemp(prefix="detllm-check-")),
                             created=True, keep=False, argv=argv, progress=progress)
    with DirectoryClaim(out) as claim:
        return _server_check(config, prompts, asked, plan, planned, levels, claim.directory,
                             created=claim.created, keep=True, argv=argv, progress=progress)


def _server_check(config: RunConfig, prompts: PromptList, asked: ServerCheck, plan: CheckPlan, planned: list[Any],
                  levels: list[int], directory: Path, *, created: bool, keep: bool, argv: Sequence[str] | None,
                  progress: Progress | None) -> Any:
    from .check import CheckResult

    options = DiffOptions(tier=asked.tier, atol=asked.atol)
    total = len(planned) * len(prompts) + (2 * len(prompts) if asked.prefix_cache_probe else 0)
    done = 0

    def tell(run: str, detail: str) -> None:
        if progress is not None:
            progress(done, total, run, detail)

    def on_row() -> None:
        nonlocal done
        done += 1

    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TRACES_DIR).mkdir(exist_ok=True)
        document = _document(config, prompts, argv)
        document["check"] = msgspec.to_builtins(plan)
        write_document(directory / RUN_CONFIG_FILE, document)
        tell("loading", f"asking {config.model} at the server")
        session = _session(config)
        with session:
            write_file(directory / ENV_FILE, session.environment.to_json())
            write_document(directory / DETERMINISM_FILE, session.determinism.to_dict())
            probe_note = None
            if asked.prefix_cache_probe:
                # First, while the prompts are not yet in the server's cache.
                tell("prefix-cache", "cold, then warm")
                probe_note = _prefix_cache_probe(session, config, prompts, directory, on_row)
            for level in levels:
                runs = [r for r in planned if r.concurrency == level]
                tell(f"c{level}", f"{len(runs) * len(prompts)} requests, {level} in flight")
                capture_level(
                    session, prompts, config.decoding(), level=level, paths=[directory / r.path for r in runs],
                    top_logprobs=config.top_logprobs, logprobs=config.logprobs,
                    labels=[{"concurrency": str(level), "repeat": str(r.repeat)} for r in runs], on_row=on_row,
                )
            settings = CheckSettings(model=config.model, backend=config.backend, runs=asked.runs, batch_sizes=[1],
                                     compositions=[], isolate=False, concurrency=levels)
            if asked.replay:
                from .check_replay import replay_divergences  # it imports replay, which imports this module

                tell("replay", "scoring both sides of each divergence at both levels")
                found = build_check_report(directory, settings, planned, read_determinism(directory), options)
                replay_divergences(session, config, directory, found, [p.id for p in prompts])
            notes = _retry_warnings(session)
        tell("report", "comparing the runs")
        report = build_check_report(directory, settings, planned, read_determinism(directory), options)
        extra = tuple(n for n in (probe_note, *notes) if n)
        if extra:
            report = msgspec.structs.replace(report, notes=[*report.notes, *extra])
        write_report_dir(report, directory)
    except BaseException:
        if created and keep and not any(directory.glob(f"{TRACES_DIR}/*.jsonl*")):
            for entry in directory.iterdir():  # nothing recorded: leave nothing but the claim, released next
                if entry.name != CLAIM_FILE:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    result = CheckResult(config=config, plan=plan, report=report, determinism=session.determinism,
                         environment=session.environment, directory=directory if keep else None)
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
    return result


def _prefix_cache_probe(session: CaptureSession, config: RunConfig, prompts: PromptList, directory: Path,
                        on_row: Callable[[], None]) -> str:
    """Each prompt cold, then warm, one request at a time; compared, and written to prefix_cache.json."""
    cold_path, warm_path = directory / TRACES_DIR / "cache-cold.jsonl", directory / TRACES_DIR / "cache-warm.jsonl"
    cached: dict[str, dict[str, int | None]] = {}
    for label, path in (("cold", cold_path), ("warm", warm_path)):
        result = capture_level(session, prompts, config.decoding(), level=1, paths=[path],
                               top_logprobs=config.top_logprobs, logprobs=config.logprobs,
                               labels=[{"prefix_cache": label}], on_row=on_row)
        for (_, pid), tokens in result.cached_tokens.items():
            cached.setdefault(pid, {})[label] = tokens
    report = diff_traces(cold_path, warm_path, DiffOptions())
    classes = {p.prompt_id: p.classification for p in report.prompts}
    reported = [c["warm"] for c in cached.values() if c.get("warm") is not None]
    hit = [pid for pid, c in cached.items() if (c.get("warm") or 0) > (c.get("cold") or 0)]
    changed = [pid for pid, cls in classes.items() if cls != "identical"]
    n = len(prompts)
    if not reported:
        verdict = "hit_unknown"
        text = (f"Prefix-cache probe: the server reports no usage.prompt_tokens_details.cached_tokens, so whether the "
                f"warm requests hit its cache is unknown; {len(changed)} of {n} prompts changed between cold and warm.")
    elif not hit:
        verdict = "not_hit"
        text = (f"Prefix-cache probe: the cache was not hit (cached_tokens did not grow on any warm request), so the "
                f"probe proves nothing about cache hits; {len(changed)} of {n} prompts changed between cold and warm.")
    else:
        verdict = "changed" if changed else "invariant"
        text = (f"Prefix-cache probe: {len(hit)} of {n} warm requests hit the cache; {len(changed)} of {n} prompts "
                f"changed between cold and warm" + (f" ({', '.join(sorted({classes[p] for p in changed}))})." if changed else "."))
    write_document(directory / PREFIX_CACHE_FILE, {
        "format": "detllm.prefix_cache", "version": "1.0", "verdict": verdict, "text": text,
        "cold": f"{TRACES_DIR}/cache-cold.jsonl", "warm": f"{TRACES_DIR}/cache-warm.jsonl",
        "prompts": [{"id": p.id, "cached_tokens_cold": cached.get(p.id, {}).get("cold"),
                     "cached_tokens_warm": cached.get(p.id, {}).get("warm"),
                     "classification": classes.get(p.id, "unmatched")} for p in prompts],
    })
    return text

"""``detllm check``: repeated runs and a batch sweep on one loaded model, judged offline.

The repeats run at the first batch size with prompts in order; then every other
batch size in order, and every batch size above 1 with other compositions, so that
each prompt meets other neighbours. All captures share one :class:`CaptureSession`
(the model is loaded once), unless ``isolate`` runs each repeat in a fresh
``detllm run`` process. The traces go into the check directory, and the report is
built from them by :func:`detllm.diff.build_check_report`, the diff engine's
comparisons of every run with run 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .._claim import CLAIM_FILE, DirectoryClaim
from ..diff import DiffOptions, build_check_report
from ..errors import CaptureError, UsageError
from ..report import write_report_dir
from ..diff.model import CheckPrompt, CheckReport, CheckSettings
from ..diff.inputs import read_determinism
from ..rundir import (
    write_document,
    write_file,
    DETERMINISM_FILE,
    ENV_FILE,
    ISOLATED_DIR,
    RUN_CONFIG_FILE,
    TRACES_DIR,
    TRACE_FILE,
    CheckPlan,
    PlannedRun,
    plan_runs,
    run_config_document,
)
from .backend import Prompt
from .determinism import DeterminismReport
from .check_replay import refuse_replay, replay_divergences
from .env import EnvSnapshot
from .prompts import PromptList, checked_prompts, prompt_lines
from .registry import BackendConfig
from .sweep import Variant, plan_sweep, run_sweep
from .runner import (
    CaptureSession,
    RunConfig,
    make_batches,
)

Progress = Callable[[int, int, str, str], None]
"""``progress(done, total, run, detail)``: ``done`` of ``total`` batches; ``run`` names
the trace being recorded (or ``loading``), ``detail`` says more."""


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found: the report and where its evidence is."""

    config: RunConfig
    """The run settings, at the first batch size."""
    plan: CheckPlan
    report: CheckReport
    determinism: DeterminismReport | None
    """The check process's controls; None when every run was isolated."""
    environment: EnvSnapshot | None
    directory: Path | None
    """The check directory, or None when nothing was kept."""

    @property
    def passed(self) -> bool:
        return self.report.passed()

    @property
    def exit_code(self) -> int:
        return self.report.exit_code()

    @property
    def tier1(self) -> bool | None:
        return self.report.verdict.tier1

    @property
    def tier2(self) -> bool | None:
        return self.report.verdict.tier2

    @property
    def batch_invariant(self) -> bool | None:
        return self.report.verdict.batch_invariant

    @property
    def prompts(self) -> list[CheckPrompt]:
        return self.report.prompts

    @property
    def trace_paths(self) -> dict[str, Path]:
        """Trace name (``bs1-run0``) -> file; empty when nothing was kept."""
        if self.directory is None:
            return {}
        return {run.name: self.directory / run.path for run in self.plan.traces}


def parse_batch_sizes(text: str | Sequence[int]) -> list[int]:
    """``"1,8"`` -> ``[1, 8]``; sizes must be distinct integers >= 1."""
    if isinstance(text, str):
        try:
            sizes = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"batch sizes must be integers separated by commas, got {text!r}") from None
    else:
        sizes = [int(size) for size in text]
    if not sizes:
        raise UsageError("give at least one batch size")
    bad = next((s for s in sizes if s < 1), None)
    if bad is not None:
        raise UsageError(f"batch size must be at least 1, got {bad}")
    if len(set(sizes)) != len(sizes):
        raise UsageError(f"batch sizes must be distinct, got {','.join(map(str, sizes))}")
    return sizes


def default_compositions(prompts: int, batch_sizes: Sequence[int], seeds: int = 64) -> list[str]:
    """``reversed`` and the shuffle (of seeds 1..``seeds``) that gives the most prompts
    other batch-mates than in order, over the batch sizes above 1."""
    sizes = [s for s in batch_sizes if s > 1]
    if not sizes:
        return []
    best, best_seed = -1, 1
    for seed in range(1, seeds + 1):
        score = sum(_mates_changed(prompts, size, f"shuffled:{seed}") for size in sizes)
        if score > best:
            best, best_seed = score, seed
        if score == prompts * len(sizes):
            break
    return ["reversed", f"shuffled:{best_seed}"]


def _mates_changed(prompts: int, size: int, composition: str) -> int:
    def mates(batches: list[list[int]]) -> dict[int, frozenset[int]]:
        return {i: frozenset(b) - {i} for b in batches for i in b}

    before, after = mates(make_batches(prompts, size, "in-order")), mates(make_batches(prompts, size, composition))
    return sum(before[i] != after[i] for i in range(prompts))


def _check_compositions(compositions: Sequence[str], prompts: int) -> list[str]:
    result = []
    for composition in compositions:
        if composition == "in-order":
            raise UsageError("in-order is always run; --compositions lists the others")
        make_batches(prompts, 2, composition)  # rejects an unknown one
        if composition in result:
            raise UsageError(f"composition {composition!r} given twice")
        result.append(composition)
    return result


def check(
    config: RunConfig,
    prompts: Sequence[Prompt],
    *,
    runs: int = 2,
    batch_sizes: Sequence[int] = (1, 8),
    compositions: Sequence[str] | None = None,
    isolate: bool = False,
    tier: int = DiffOptions.tier,
    atol: float = DiffOptions.atol,
    out: str | os.PathLike[str] | None = None,
    argv: Sequence[str] | None = None,
    progress: Progress | None = None,
    sweep: Sequence[str] = (),
    sweep_mode: str = "one-at-a-time",
    replay: bool = False,
) -> CheckResult:
    """Run the check and write its directory (a temporary one, removed, when ``out`` is None).

    ``config.batch_size`` and ``config.composition`` are ignored: ``batch_sizes[0]``
    and ``in-order`` are the repeats'. ``sweep``: ``KEY=V1,V2`` items, engine settings
    run again from the baseline (run 0), one at a time or as a ``grid`` (``sweep_mode``).
    ``replay``: replay both sides of every divergence under both setups (``replays/``),
    so the report measures the margin at each (hf or vllm backend, in one process).
    """
    prompts = checked_prompts(prompts)  # once: every capture below takes the checked list as it is
    if runs < 1:
        raise UsageError(f"runs must be at least 1, got {runs}")
    sizes = parse_batch_sizes(batch_sizes)
    if replay:
        refuse_replay(isolate)
    chosen = default_compositions(len(prompts), sizes) if compositions is None else _check_compositions(compositions, len(prompts))
    options = DiffOptions(tier=tier, atol=atol)
    planned = plan_runs(runs, sizes, chosen, isolate)
    if len(planned) < 2:
        raise UsageError(
            "nothing to compare: one run at batch size 1; ask for --runs 2 or more, or another batch size"
        )
    config = msgspec.structs.replace(config, batch_size=sizes[0], composition="in-order")
    plan = CheckPlan(runs=runs, batch_sizes=sizes, compositions=chosen, isolate=isolate, tier=tier, atol=atol, traces=planned)  # type: ignore[arg-type]
    backend_config = config.backend_config(max_batch_size=max(sizes))  # refuses contradicting options early
    swept = (plan_sweep(config, sweep, sweep_mode), sweep_mode) if sweep else None
    if out is not None:
        with DirectoryClaim(out) as claim:
            return _check_in(claim, config, prompts, plan, backend_config, options, argv, progress, keep=True, sweep=swept, replay=replay)
    with tempfile.TemporaryDirectory(prefix="detllm-check-") as scratch:
        return _check_in(Path(scratch), config, prompts, plan, backend_config, options, argv, progress, keep=False, sweep=swept,
                         replay=replay)


def _check_in(
    where: Path | DirectoryClaim,
    config: RunConfig,
    prompts: PromptList,
    plan: CheckPlan,
    backend_config: BackendConfig,
    options: DiffOptions,
    argv: Sequence[str] | None,
    progress: Progress | None,
    keep: bool,
    sweep: tuple[list[Variant], str] | None = None,
    replay: bool = False,
) -> CheckResult:
    batches = {run.name: len(make_batches(len(prompts), run.batch_size, run.composition)) for run in plan.traces}
    total = sum(batches.values())
    done = 0

    def report(run: str, detail: str) -> None:
        if progress is not None:
            progress(done, total, run, detail)

    isolated = [run for run in plan.traces if run.isolated]
    in_process = [run for run in plan.traces if not run.isolated]
    directory = where.directory if isinstance(where, DirectoryClaim) else where
    created = isinstance(where, DirectoryClaim) and where.created
    try:
        (directory / TRACES_DIR).mkdir(exist_ok=True)
        document = run_config_document(config, prompts, argv)
        document["check"] = msgspec.to_builtins(plan)
        if sweep is not None:
            document["sweep"] = {"mode": sweep[1], "variants": [v.name for v in sweep[0]]}
        write_document(directory / RUN_CONFIG_FILE, document)
        # Isolated repeats first: no model of this process's holds memory while they run.
        for run in isolated:
            report(run.name, "starting a process of its own")
            _run_isolated(directory, config, prompts, run)
            done += batches[run.name]
        determinism = environment = None
        if in_process:
            report("loading", f"loading {config.model}")
            session = CaptureSession.of(config, backend_config)
            with session:
                determinism, environment = session.determinism, session.environment
                write_file(directory / ENV_FILE, session.environment.to_json())
                write_document(directory / DETERMINISM_FILE, session.determinism.to_dict())
                for run in in_process:

                    def on_batch(finished: int, batches: int, name: str = run.name) -> None:
                        nonlocal done
                        done += 1
                        report(name, f"batch {finished} of {batches}")

                    report(run.name, "starting")
                    session.capture(
                        prompts,
                        config.decoding(),
                        batch_size=run.batch_size,
                        composition=run.composition,
                        top_logprobs=config.top_logprobs,
                        logprobs=config.logprobs,
                        path=directory / run.path,
                        keep_rows=False,
                        on_batch=on_batch,
                    )
                if replay:
                    report("replay", "replaying the divergences under both setups")
                    found = build_check_report(directory, _settings(config, plan), plan.traces, read_determinism(directory), options)
                    replay_divergences(session, config, directory, found, [p.id for p in prompts])
        else:
            first = directory / ISOLATED_DIR / plan.traces[0].name
            shutil.copyfile(first / ENV_FILE, directory / ENV_FILE)
            shutil.copyfile(first / DETERMINISM_FILE, directory / DETERMINISM_FILE)
        if sweep is not None:
            run_sweep(directory, plan.traces[0].path, sweep[0], prompts, sweep[1], _run_isolated,
                      lambda i, n, run, detail: report(run, f"variant {i + 1} of {n}: {detail}"))
        report("report", "comparing the runs")
        settings = _settings(config, plan)
        result = build_check_report(directory, settings, plan.traces, read_determinism(directory), options)
        write_report_dir(result, directory, command=list(argv) if argv is not None else None)
    except BaseException:
        if created and not any(directory.glob(f"{TRACES_DIR}/*.jsonl")):
            # Nothing was recorded: leave nothing behind but the claim, which the
            # caller removes with the directory (as a refused run does).
            for entry in directory.iterdir():
                if entry.name != CLAIM_FILE:
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
        raise
    return CheckResult(
        config=config,
        plan=plan,
        report=result,
        determinism=determinism,
        environment=environment,
        directory=directory if keep else None,
    )


def _settings(config: RunConfig, plan: CheckPlan) -> CheckSettings:
    """The report's settings (the replays are planned from a first report of the traces)."""
    return CheckSettings(
        model=config.model,
        backend=config.backend,
        runs=plan.runs,
        batch_sizes=plan.batch_sizes,
        compositions=plan.compositions,
        isolate=plan.isolate,
    )


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


def _run_isolated(directory: Path, config: RunConfig, prompts: Sequence[Prompt], run: PlannedRun) -> None:
    """One repeat as ``detllm run`` in a fresh Python process; its trace goes to ``run.path``."""
    scratch = directory / ISOLATED_DIR
    scratch.mkdir(exist_ok=True)
    prompt_file = scratch / "prompts.jsonl"
    if not prompt_file.exists():
        write_file(prompt_file, prompt_lines(prompts))
    run_dir = scratch / run.name
    command = [
        sys.executable, "-m", "detllm", "run", *config.arguments(),
        "--batch-size", str(run.batch_size), "--composition", run.composition,
        "--prompt-file", str(prompt_file), "--out", str(run_dir),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
    finished = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if finished.returncode != 0:
        lines = [line for line in finished.stderr.decode(errors="replace").splitlines() if line.strip()]
        message = lines[-1].removeprefix("detllm: ") if lines else f"exit status {finished.returncode}"
        raise CaptureError(f"{run.name}, in a process of its own: {message}")
    os.replace(run_dir / TRACE_FILE, directory / run.path)

"""Running captures: one loaded backend, many runs, each written as its own trace.

:class:`CaptureSession` applies the determinism controls, loads the backend once
and snapshots the environment; :meth:`CaptureSession.capture` then runs the prompts
at a batch size and batch composition and returns (and writes) one trace. A
repeatability check is a loop over ``capture`` calls with different batch sizes,
compositions and output paths. :func:`run` is ``detllm run``: one capture written
to a run directory.
"""

from __future__ import annotations

import datetime
import os
import random
from contextlib import AbstractContextManager, nullcontext
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .._claim import DirectoryClaim
from .._version import __version__
from ..errors import UsageError
from ..trace import STEPS_VERSION, VERSION, Batch, Decoding, Header, Logprobs, Placement, Row, Software, row_problems
from ..writer import TraceWriter, canonical_row
from ..rundir import (
    write_document,
    write_file,
    DETERMINISM_FILE,
    ENV_FILE,
    RUN_CONFIG_FILE,
    TRACE_FILE,
    Prompt,
    RunSettings,
    run_config_document,
)
from .backend import Backend
from .determinism import DeterminismControls, DeterminismReport
from .env import EnvSnapshot, capture_environment
from .prompts import DEFAULT_PROMPTS, PromptList, checked_prompts, prompts_from_texts
from .registry import STARTUP_LOGPROBS, BackendConfig, load_backend

COMPOSITIONS = ("in-order", "reversed", "shuffled:SEED")
"""How prompts are grouped into batches: consecutive prompts (``in-order``), from the
last prompt to the first (``reversed``), or in an order shuffled with a seed
(``shuffled:7``). Rows are written in prompt order whatever the composition."""


class RunConfig(RunSettings, kw_only=True, frozen=True):
    """Everything ``detllm run`` was asked to do (the fields of :class:`~detllm.rundir.RunSettings`,
    written to ``run_config.json``), and how to load a backend for it."""

    def backend_config(self, max_batch_size: int | None = None) -> BackendConfig:
        options = dict(self.options)
        key = STARTUP_LOGPROBS.get(self.backend)
        if key is not None and options.setdefault(key, self.logprobs) != self.logprobs:
            raise UsageError(
                f"the backend option {key}={options[key]!r} contradicts the logprobs asked for ({self.logprobs!r}); "
                f"give one of them"
            )
        return BackendConfig(
            model=self.model,
            tokenizer=self.tokenizer,
            revision=self.revision,
            dtype=self.dtype,
            device=self.device,
            max_batch_size=self.batch_size if max_batch_size is None else max_batch_size,
            options=options,
        )


@dataclass(frozen=True)
class Capture:
    """One captured trace: its header, its rows (unless not kept) and where it was written."""

    header: Header
    rows: list[Row] | None
    path: Path | None


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` did: the trace, the determinism report, the environment."""

    config: RunConfig
    header: Header
    rows: list[Row]
    determinism: DeterminismReport
    environment: EnvSnapshot
    directory: Path | None
    """The run directory, or None when nothing was written."""

    @property
    def trace_path(self) -> Path | None:
        return self.directory / TRACE_FILE if self.directory is not None else None


class CaptureSession:
    """Determinism controls, environment and a loaded backend, for many captures.

    Use as a context manager: on exit the backend is closed and the global state
    the controls changed is restored.
    """

    def __init__(
        self,
        config: BackendConfig,
        *,
        backend: str = "hf",
        mode: str = "best-effort",
        seed: int = 0,
        threads: int | None = None,
        redact: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.backend_name = backend
        self.controls = DeterminismControls(mode, seed=seed, threads=threads, device=config.device)
        self.redact = redact
        self.determinism: DeterminismReport
        self.environment: EnvSnapshot
        self.backend: Backend

    @classmethod
    def of(cls, config: RunConfig, backend_config: BackendConfig | None = None) -> CaptureSession:
        """The session for ``config``'s settings (``backend_config``: instead of its own)."""
        return cls(
            backend_config or config.backend_config(),
            backend=config.backend,
            mode=config.mode,
            seed=config.seed,
            threads=config.threads,
            redact=tuple(config.redact),
        )

    def __enter__(self) -> CaptureSession:
        # Controls first: CUBLAS_WORKSPACE_CONFIG must be set before CUDA starts.
        self.determinism = self.controls.apply()
        try:
            self.backend = load_backend(self.backend_name, self.config)
            try:
                self.environment = capture_environment(redact=self.redact)
            except BaseException:
                self.backend.close()
                raise
        except BaseException:
            self.controls.restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.backend.close()
        finally:
            self.controls.restore()

    def capture(
        self,
        prompts: Sequence[Prompt],
        decoding: Decoding,
        *,
        batch_size: int,
        composition: str = "in-order",
        top_logprobs: int = 5,
        logprobs: str = "raw",
        path: str | os.PathLike[str] | None = None,
        labels: dict[str, str] | None = None,
        keep_rows: bool = True,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> Capture:
        """Run every prompt once, ``batch_size`` at a time, and record the trace.

        Rows are written to ``path`` (if given) as soon as every earlier prompt's row
        is ready; a failure leaves ``<path>.partial``. ``on_batch(done, batches)`` is
        called after each batch, for progress reports. A :class:`PromptList` is taken as
        checked; other prompts are checked first.
        """
        prompts = checked_prompts(prompts)
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        if logprobs not in ("raw", "processed"):
            raise UsageError(f"logprobs must be 'raw' or 'processed', got {logprobs!r}")
        batches = make_batches(len(prompts), batch_size, composition)
        resolved = self.backend.resolve_decoding(decoding)
        self.controls.reseed()
        header = self._header(resolved, Batch(size=batch_size, composition=composition), top_logprobs, logprobs, labels)
        writer = TraceWriter(path, header) if path is not None else None
        kept: list[Row] | None = [] if keep_rows else None
        try:
            for row in _in_prompt_order(self._generate(prompts, batches, resolved, top_logprobs, logprobs, on_batch)):
                row = canonical_row(row)
                if writer is not None:
                    writer.write(row)
                else:
                    for field, problem in row_problems(row, header):
                        raise ValueError(f"row {row.prompt_id!r}: {field}: {problem}")
                if kept is not None:
                    kept.append(row)
        except BaseException:
            if writer is not None:
                writer.abandon()
            raise
        written = writer.close() if writer is not None else None
        return Capture(header, kept, written)

    def _generate(
        self,
        prompts: Sequence[Prompt],
        batches: list[list[int]],
        decoding: Decoding,
        top_k: int,
        logprobs: str,
        on_batch: Callable[[int, int], None] | None,
    ) -> Iterator[tuple[int, Row]]:
        for index, members in enumerate(batches):
            rows = self.backend.generate([prompts[i] for i in members], decoding, top_k=top_k, logprob_mode=logprobs)  # type: ignore[arg-type]
            for position, (prompt_index, row) in enumerate(zip(members, rows)):
                step = row.batch.step if row.batch is not None else None  # where the engine spread the batch
                placed = msgspec.structs.replace(row, batch=Placement(index=index, position=position, size=len(members), step=step))
                yield prompt_index, placed
            if on_batch is not None:
                on_batch(index + 1, len(batches))

    def _header(self, decoding: Decoding, batch: Batch, top_k: int, semantics: str, labels: dict[str, str] | None) -> Header:
        description = self.backend.describe()
        return Header(
            version=STEPS_VERSION if description.splits_batches and batch.size > 1 else VERSION,
            producer=Software(name="detllm", version=__version__),
            created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            backend=description.backend,
            model=description.model,
            tokenizer=description.tokenizer,
            dtype=description.dtype,
            device=description.device,
            decoding=decoding,
            batch=batch,
            logprobs=Logprobs(semantics=semantics, top_k=top_k),  # type: ignore[arg-type]
            determinism=self.determinism.to_header(),
            environment=self.environment.to_header(),
            backend_settings=description.settings,
            labels=dict(labels or {}),
        )


def make_batches(count: int, batch_size: int, composition: str) -> list[list[int]]:
    """Prompt indices grouped into batches, following ``composition``."""
    order = list(range(count))
    if composition == "reversed":
        order.reverse()
    elif composition.startswith("shuffled:"):
        try:
            seed = int(composition.removeprefix("shuffled:"))
        except ValueError:
            raise UsageError(f"batch composition {composition!r}: the shuffle seed must be an integer") from None
        random.Random(seed).shuffle(order)
    elif composition != "in-order":
        raise UsageError(f"unknown batch composition {composition!r} (choose from {', '.join(COMPOSITIONS)})")
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def _in_prompt_order(items: Iterator[tuple[int, Row]]) -> Iterator[Row]:
    """Reorder rows by prompt index, yielding each as soon as its predecessors are out."""
    waiting: dict[int, Row] = {}
    next_index = 0
    for index, row in items:
        waiting[index] = row
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1


def as_prompts(prompts: Sequence[str | Prompt] | None) -> PromptList:
    """Texts get ids ``p1``, ``p2``, ...; None means the built-in prompt set. Checked once
    here (:func:`~detllm.capture.prompts.checked_prompts`), for every capture after."""
    if prompts is None:
        return checked_prompts(prompts_from_texts(DEFAULT_PROMPTS))
    if isinstance(prompts, str):
        raise UsageError("prompts must be a list of strings or Prompt objects, not one string")
    texts = [p for p in prompts if isinstance(p, str)]
    if texts and len(texts) != len(prompts):
        raise UsageError("prompts must be all strings or all Prompt objects")
    return checked_prompts(prompts_from_texts(texts) if texts else prompts)  # type: ignore[arg-type]




def run(
    config: RunConfig,
    prompts: Sequence[Prompt],
    *,
    out: str | os.PathLike[str] | None = None,
    argv: Sequence[str] | None = None,
) -> RunResult:
    """One capture. With ``out``, writes the run directory: ``env.json``,
    ``run_config.json``, ``determinism_applied.json`` and ``trace.jsonl``."""
    prompts = checked_prompts(prompts)
    make_batches(len(prompts), max(config.batch_size, 1), config.composition)  # reject a bad composition early
    claim: AbstractContextManager[object] = DirectoryClaim(out) if out is not None else nullcontext()
    directory = Path(out) if out is not None else None
    session = CaptureSession.of(config)
    with claim, session:
        if directory is not None:
            write_document(directory / RUN_CONFIG_FILE, run_config_document(config, prompts, argv))
            write_file(directory / ENV_FILE, session.environment.to_json())
            write_document(directory / DETERMINISM_FILE, session.determinism.to_dict())
        captured = session.capture(
            prompts,
            config.decoding(),
            batch_size=config.batch_size,
            composition=config.composition,
            top_logprobs=config.top_logprobs,
            logprobs=config.logprobs,
            path=directory / TRACE_FILE if directory is not None else None,
        )
    assert captured.rows is not None
    return RunResult(
        config=config,
        header=captured.header,
        rows=captured.rows,
        determinism=session.determinism,
        environment=session.environment,
        directory=directory,
    )

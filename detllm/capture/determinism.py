"""Determinism controls: seeds, deterministic kernels, no TF32, fixed thread counts.

:class:`DeterminismControls` is a context manager. On entry it works out which
controls apply to the device in use and which are unavailable (and why), refuses
to go on in ``strict`` mode when a control the run needs is unavailable, and
applies the rest. On exit it puts back every piece of global state it changed, so
a library caller's process is left as it was. ``best-effort`` applies what it can
and lists the rest in the report; ``off`` applies nothing.

What the controls can and cannot do is described in ``docs/determinism_boundary.md``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import DeterminismUnavailableError, UsageError
from ..rundir import DeterminismRecord
from ..trace import Determinism

MODES = ("strict", "best-effort", "off")
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
"""cuBLAS needs a fixed workspace to be deterministic; ``:16:8`` is the other valid value."""
_CUBLAS_VALID = (":4096:8", ":16:8")

@dataclass(frozen=True)
class DeterminismReport:
    """What a :class:`DeterminismControls` applied, and what it could not, with reasons.

    ``complete`` is true when every control the run needs was applied: controls
    that do not concern the device (CUDA ones on a CPU run) are listed as
    unavailable but do not make the report incomplete.
    """

    mode: str
    seed: int | None
    applied: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    complete: bool = True

    def to_header(self) -> Determinism:
        return Determinism(mode=self.mode, applied=dict(self.applied), unavailable=dict(self.unavailable))

    def to_dict(self) -> dict[str, Any]:
        """The content of ``determinism_applied.json`` (:class:`~detllm.rundir.DeterminismRecord`)."""
        record = DeterminismRecord(mode=self.mode, seed=self.seed, complete=self.complete,  # type: ignore[arg-type]
                                   applied=self.applied, unavailable=self.unavailable)
        return msgspec.to_builtins(record)  # type: ignore[no-any-return]

    def missing(self) -> dict[str, str]:
        """The unavailable controls the run needed (empty when complete)."""
        return {k: v for k, v in self.unavailable.items() if not v.startswith(_NOT_NEEDED)}


_NOT_NEEDED = "not needed: "


@dataclass
class _Control:
    name: str
    value: Any
    apply: Callable[[], Callable[[], None]] | None
    """Applies the control and returns the function that undoes it; None when unavailable."""
    reason: str = ""
    needed: bool = True


class DeterminismControls:
    """Apply the determinism controls for one capture; restore everything on exit.

    ``seed`` seeds Python's, numpy's and torch's generators. ``threads`` sets
    torch's intra-op thread count (None keeps the current count, and records it).
    ``device`` is the device the run uses: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """

    def __init__(self, mode: str = "best-effort", *, seed: int | None = 0, threads: int | None = None, device: str = "auto") -> None:
        if mode not in MODES:
            raise UsageError(f"unknown determinism mode {mode!r} (choose from {', '.join(MODES)})")
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        self.mode = mode
        self.seed = seed
        self.threads = threads
        self.device = device
        self.report: DeterminismReport | None = None
        self._undo: list[Callable[[], None]] = []

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> DeterminismReport:
        self.report = self.apply()
        return self.report

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def apply(self) -> DeterminismReport:
        """Plan, check (strict) and apply the controls; see :meth:`restore`."""
        if self.mode == "off":
            self.report = DeterminismReport(mode="off", seed=None)
            return self.report
        controls = self._plan()
        missing = [c for c in controls if c.apply is None and c.needed]
        if missing and self.mode == "strict":
            first = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DeterminismUnavailableError(
                f"strict mode: cannot apply {first.name}: {first.reason}{more}; "
                "use --mode best-effort to run without it"
            )
        applied: dict[str, Any] = {}
        unavailable: dict[str, str] = {}
        for control in controls:
            if control.apply is None:
                unavailable[control.name] = control.reason if control.needed else _NOT_NEEDED + control.reason
                continue
            self._undo.append(control.apply())
            applied[control.name] = control.value
        self.report = DeterminismReport(self.mode, self.seed, applied, unavailable, complete=not missing)
        return self.report

    def reseed(self) -> None:
        """Seed every generator again, so that each run of a session starts alike."""
        if self.mode == "off" or self.seed is None:
            return
        random.seed(self.seed)
        numpy = _module("numpy")
        if numpy is not None:
            numpy.random.seed(self.seed)
        torch = _module("torch")
        if torch is not None:
            torch.manual_seed(self.seed)  # also seeds every CUDA device

    def restore(self) -> None:
        """Undo what :meth:`apply` changed, in reverse order."""
        while self._undo:
            self._undo.pop()()

    # -- the controls ----------------------------------------------------------------

    def _plan(self) -> list[_Control]:
        # First, before this capture imports torch: cuBLAS reads it when CUDA starts.
        cublas = self._cublas_workspace()
        controls = [cublas]
        if self.seed is not None:
            controls.append(_Control("python_random_seed", self.seed, _seed_python(self.seed)))
            numpy = _module("numpy")
            controls.append(
                _Control("numpy_random_seed", self.seed, _seed_numpy(numpy, self.seed))
                if numpy is not None
                else _Control("numpy_random_seed", self.seed, None, "numpy is not installed", needed=False)
            )
        torch = _module("torch")
        if torch is None:
            cublas.needed = False
            controls.append(_Control("torch", None, None, "torch is not installed", needed=False))
            return controls
        cuda = self._uses_cuda(torch)
        cublas.needed = cuda is None
        if self.seed is not None:
            controls.append(_Control("torch_manual_seed", self.seed, _seed_torch(torch, self.seed)))
        controls.append(_deterministic_algorithms(torch, warn_only=cuda is None and cublas.apply is None))
        controls.append(
            _Control("float32_matmul_precision", "highest", _setter(torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, "highest"))
        )
        threads = self.threads or torch.get_num_threads()
        controls.append(_Control("torch_num_threads", threads, _setter(torch.get_num_threads, torch.set_num_threads, threads)))
        for name, value, owner, attribute in (
            ("cudnn_deterministic", True, torch.backends.cudnn, "deterministic"),
            ("cudnn_benchmark", False, torch.backends.cudnn, "benchmark"),
            ("cuda_matmul_allow_tf32", False, torch.backends.cuda.matmul, "allow_tf32"),
            ("cudnn_allow_tf32", False, torch.backends.cudnn, "allow_tf32"),
        ):
            controls.append(
                _Control(name, value, _attribute(owner, attribute, value)) if cuda is None else _Control(name, value, None, cuda, needed=False)
            )
        if self.seed is not None:
            controls.append(
                _Control("torch_cuda_manual_seed_all", self.seed, _seed_cuda(torch, self.seed))
                if cuda is None
                else _Control("torch_cuda_manual_seed_all", self.seed, None, cuda, needed=False)
            )
        return controls

    def _uses_cuda(self, torch: Any) -> str | None:
        """None when the run uses CUDA; otherwise why CUDA controls do not apply."""
        if self.device.startswith("cuda") or self.device == "auto":
            if torch.cuda.is_available():
                return None
            return "no CUDA device"
        return f"the run uses {self.device}"

    def _cublas_workspace(self) -> _Control:
        name = "CUBLAS_WORKSPACE_CONFIG"
        current = os.environ.get(name)
        if current in _CUBLAS_VALID:
            return _Control(name, current, _no_undo)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            reason = "CUDA was initialised before it could be set; set it in the environment before Python starts"
            return _Control(name, CUBLAS_WORKSPACE_CONFIG, None, reason)
        # Also set for CPU runs: harmless, and a later CUDA use in this process is covered.
        return _Control(name, CUBLAS_WORKSPACE_CONFIG, _environ(name, CUBLAS_WORKSPACE_CONFIG))


def _deterministic_algorithms(torch: Any, warn_only: bool) -> _Control:
    """``torch.use_deterministic_algorithms(True)``; warn-only when cuBLAS has no fixed
    workspace, since its kernels would otherwise raise instead of running."""
    name = "torch_use_deterministic_algorithms"
    if not hasattr(torch, "use_deterministic_algorithms"):
        return _Control(name, True, None, f"torch {torch.__version__} has no use_deterministic_algorithms")

    def apply() -> Callable[[], None]:
        before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        return lambda: torch.use_deterministic_algorithms(before[0], warn_only=before[1])

    return _Control(name, "warn-only" if warn_only else True, apply)


def _module(name: str) -> Any:
    """Import ``name`` if it is installed; None otherwise."""
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def _no_undo() -> Callable[[], None]:
    return lambda: None


def _environ(name: str, value: str) -> Callable[[], Callable[[], None]]:
    def apply() -> Callable[[], None]:
        before = os.environ.get(name)
        os.environ[name] = value

        def undo() -> None:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before

        return undo

    return apply


def _setter(get: Callable[[], Any], set_: Callable[[Any], None], value: Any) -> Callable[[], Callable[[], None]]:
    def apply() -> Callable[[], None]:
        before = get()
        set_(value)
        return lambda: set_(before)

    return apply


def _attribute(owner: Any, attribute: str, value: Any) -> Callable[[], Callable[[], None]]:
    return _setter(lambda: getattr(owner, attribute), lambda v: setattr(owner, attribute, v), value)


def _seed_python(seed: int) -> Callable[[], Callable[[], None]]:
    def apply() -> Callable[[], None]:
        state = random.getstate()
        random.seed(seed)
        return lambda: random.setstate(state)

    return apply


def _seed_numpy(numpy: Any, seed: int) -> Callable[[], Callable[[], None]]:
    def apply() -> Callable[[], None]:
        state = numpy.random.get_state()
        numpy.random.seed(seed)
        return lambda: numpy.random.set_state(state)

    return apply


def _seed_torch(torch: Any, seed: int) -> Callable[[], Callable[[], None]]:
    def apply() -> Callable[[], None]:
        state = torch.get_rng_state()
        torch.random.default_generator.manual_seed(seed)
        return lambda: torch.set_rng_state(state)

    return apply


def _seed_cuda(torch: Any, seed: int) -> Callable[[], Callable[[], None]]:
    def apply() -> Callable[[], None]:
        states = torch.cuda.get_rng_state_all()
        torch.cuda.manual_seed_all(seed)
        return lambda: torch.cuda.set_rng_state_all(states)

    return apply

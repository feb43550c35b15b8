"""detLLM: is this LLM inference setup reproducible? If not, where and why.

The trace format and its reader, writer and validator need only orjson and msgspec;
capture backends import torch, transformers or vLLM when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    from .capture.api import check, env, replay, replay_report, run
    from .capture.registry import BackendConfig
    from .capture.runner import CaptureSession

_CAPTURE = {name: ".capture.api" for name in ("run", "check", "replay", "replay_report", "env")}
__getattr__ = lazy_names(__name__, {"BackendConfig": ".capture.registry", "CaptureSession": ".capture.runner", **_CAPTURE})
"""Capture names exported without importing capture until they are first used: the functions
of :mod:`detllm.capture.api`, the session and the backend settings."""


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

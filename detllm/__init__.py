"""detLLM: is this LLM inference setup reproducible? If not, where and why.

The trace format and its reader, writer and validator need only orjson and msgspec;
capture backends import torch, transformers or vLLM when they run.
"""

from ._version import __version__
from .errors import (
    DetllmError,
    ExitCode,
    IncompleteTraceError,
    InputError,
    NewerMinorVersionWarning,
    TraceFormatError,
    UnsupportedVersionError,
    UsageError,
)
from .reader import TraceReader, open_trace, read_header
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
    Row,
    Software,
)
from .validate import Finding, ValidationResult, validate_trace
from .writer import TraceWriter, write_trace
from .diff import DiffOptions, DiffReport, diff_traces
from .report import (
    AggregateReport,
    aggregate_traces,
    load_report,
    render_json,
    render_markdown,
    render_text,
    write_report_dir,
)

__all__ = [
    "Artifact",
    "Batch",
    "Decoding",
    "Determinism",
    "DetllmError",
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
    "Row",
    "Software",
    "TraceFormatError",
    "TraceReader",
    "TraceWriter",
    "UnsupportedVersionError",
    "UsageError",
    "ValidationResult",
    "__version__",
    "open_trace",
    "read_header",
    "validate_trace",
    "write_trace",
    "DiffOptions",
    "DiffReport",
    "diff_traces",
    "AggregateReport",
    "aggregate_traces",
    "load_report",
    "render_json",
    "render_markdown",
    "render_text",
    "write_report_dir",
]

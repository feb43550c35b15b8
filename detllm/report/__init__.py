"""Reports: text, Markdown, JSON and HTML renderings, and aggregation of many traces.

``render_text``, ``render_markdown``, ``render_json`` and ``render_html`` take any kind of report:
a :class:`~detllm.diff.DiffReport`, an :class:`AggregateReport` or a :class:`CheckReport`.
"""

from ._aggregate import aggregate_traces
from ._aggregate_model import (
    AggregateReport,
    AggregateSetup,
    AggregateSummary,
    AggregateVerdict,
    Branch,
    FieldVariation,
    PromptAggregate,
    Split,
    ValueRuns,
    Variant,
)
from ._check import build_check_report, rebuild_check_report
from ._check_model import (
    CheckComparison,
    CheckDeterminism,
    CheckDivergence,
    CheckPrompt,
    CheckReport,
    CheckRun,
    CheckSettings,
    CheckSummary,
    CheckVerdict,
)
from ._load import load_report
from ._render import render_html, render_json, render_markdown, render_text, write_json, write_report_dir
from ._text import DEFAULT_MAX_PROMPTS

__all__ = [
    "DEFAULT_MAX_PROMPTS",
    "AggregateReport",
    "AggregateSetup",
    "AggregateSummary",
    "AggregateVerdict",
    "Branch",
    "CheckComparison",
    "CheckDeterminism",
    "CheckDivergence",
    "CheckPrompt",
    "CheckReport",
    "CheckRun",
    "CheckSettings",
    "CheckSummary",
    "CheckVerdict",
    "FieldVariation",
    "PromptAggregate",
    "Split",
    "ValueRuns",
    "Variant",
    "aggregate_traces",
    "build_check_report",
    "load_report",
    "rebuild_check_report",
    "render_html",
    "render_json",
    "render_markdown",
    "render_text",
    "write_json",
    "write_report_dir",
]

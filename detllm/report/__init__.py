"""Reports: text, Markdown and JSON renderings, and aggregation of many traces.

``render_text``, ``render_markdown`` and ``render_json`` take either kind of report:
a :class:`~detllm.diff.DiffReport` or an :class:`AggregateReport`.
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
from ._load import load_report
from ._render import render_json, render_markdown, render_text, write_json, write_report_dir
from ._text import DEFAULT_MAX_PROMPTS

__all__ = [
    "DEFAULT_MAX_PROMPTS",
    "AggregateReport",
    "AggregateSetup",
    "AggregateSummary",
    "AggregateVerdict",
    "Branch",
    "FieldVariation",
    "PromptAggregate",
    "Split",
    "ValueRuns",
    "Variant",
    "aggregate_traces",
    "load_report",
    "render_json",
    "render_markdown",
    "render_text",
    "write_json",
    "write_report_dir",
]

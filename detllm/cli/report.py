"""Render a saved report, or aggregate three or more traces of the same prompts.

PATH is a saved report (report.json), a run or check directory (its report.json,
or the traces it holds), or trace files. A check directory is judged again from its
traces when comparison options are given or its report.json is missing. Two traces are compared as by ``detllm diff``;
three or more are aggregated: distinct completions per prompt, how many runs
agree with the majority, where completions split, and the divergence positions.
Exit status: 0 when the runs agree at the chosen tier, 1 when they do not, 2 for
unreadable or invalid input and usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._io import open_regular
from ..diff import DiffOptions, aggregate_traces, diff_traces, rebuild_check_report
from ..errors import DetllmError, TraceFormatError, UsageError
from ..report import load_report, recorded_command
from ..diff.inputs import expand_paths, read_plan
from ..rundir import RUN_CONFIG_FILE, read_run_config
from ._report_options import (
    add_comparison_arguments,
    add_output_arguments,
    as_trouble,
    emit,
    options_from,
)

_REPORT_NAME = "report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="report.json, run directory, or trace files")
    add_comparison_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(tier=None)


def is_report(path: Path) -> bool:
    """Whether a file is a saved report rather than a trace."""
    if path.name.endswith((".jsonl", ".jsonl.gz", ".partial")):
        return False
    if path.suffix == ".json":
        return True
    try:
        with open_regular(path, "report") as f:
            start = f.read(64).lstrip()
    except (OSError, DetllmError):  # reading it as a trace says what is wrong
        return False
    return start[:1] == b"{" and b'"record"' not in start


def _saved(path: Path, args: argparse.Namespace, options: DiffOptions) -> Any:
    defaults = DiffOptions(tier=options.tier, workers=options.workers)
    if options != defaults:
        raise UsageError("comparison options apply when comparing traces; a saved report is rendered as it was made")
    report = load_report(path)
    if args.tier is not None and args.tier != report.options.tier:
        report = report.at_tier(args.tier)
    return report


def _is_check_directory(path: Path) -> bool:
    """A directory with a ``run_config.json`` that has a ``check``; a broken one is an error."""
    if not (path / RUN_CONFIG_FILE).is_file():
        return False
    return read_run_config(path).check is not None


def _build(args: argparse.Namespace, options: DiffOptions) -> Any:
    paths = [Path(p) for p in args.paths]
    if len(paths) == 1:
        path = paths[0]
        if path.is_dir() and _is_check_directory(path):
            defaults = DiffOptions(tier=options.tier, workers=options.workers)
            if (path / _REPORT_NAME).is_file() and options == defaults:
                return _saved(path / _REPORT_NAME, args, options)
            if args.tier is None:
                _, plan = read_plan(path)
                options = options.replace(tier=plan.tier)
            return rebuild_check_report(path, options)
        if path.is_dir() and (path / _REPORT_NAME).is_file():
            return _saved(path / _REPORT_NAME, args, options)
        if path.is_file() and is_report(path):
            return _saved(path, args, options)
    elif any(p.is_file() and is_report(p) for p in paths):
        raise UsageError("give one saved report, or trace files; not both")
    traces = expand_paths(paths, allow_incomplete=options.allow_incomplete)
    if len(traces) < 2:
        raise UsageError(f"{traces[0]}: one trace has nothing to compare with; give two or more")
    if len(traces) == 2:
        return diff_traces(traces[0], traces[1], options)
    return aggregate_traces(traces, options)


def _command_of(paths: list[str]) -> list[str] | None:
    """For one check directory: the command its ``run_config.json`` records, for the HTML page."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return recorded_command(Path(paths[0]))
    return None


def run(args: argparse.Namespace) -> int:
    options = options_from(args)  # no --tier: Tier 1, or the saved report's or check's own
    try:
        report = _build(args, options)
    except TraceFormatError as error:
        raise as_trouble(error) from None
    emit(report, args, command=_command_of(args.paths))
    code = report.exit_code()
    if code == 2:
        print("detllm: Tier 2 cannot be judged: a trace records no logprobs", file=sys.stderr)
    return code

"""Check trace files against the trace format.

Each problem is printed as ``PATH:LINE: FIELD: PROBLEM``. A directory stands for
every ``*.jsonl`` and ``*.jsonl.gz`` file below it, and every ``*.partial`` one
(a trace whose run did not finish, which is invalid). Exit status: 0 when every file
is valid, 1 when any is invalid, 2 when a file cannot be read or the usage is wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from .._escape import text as escape
from ..errors import ExitCode, InputError, UsageError
from ..validate import ValidationResult, validate_trace
from ..writer import PARTIAL_SUFFIX

REPORT_FORMAT = "detllm.validation"
REPORT_VERSION = "1.0"

_TRACE_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl" + PARTIAL_SUFFIX, ".jsonl.gz" + PARTIAL_SUFFIX)
"""What a directory is searched for: traces, and traces that did not finish (invalid)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="trace file, or a directory of traces")
    parser.add_argument("--json", action="store_true", help="print the findings as one JSON document")
    parser.add_argument("-q", "--quiet", action="store_true", help="print findings only, no summary")


def expand(paths: list[str]) -> tuple[list[str], list[str]]:
    """Files to validate, and the I/O problems met while listing them."""
    files: list[str] = []
    problems: list[str] = []
    for name in paths:
        if not name:
            raise UsageError("an empty path is not a trace file or directory")
        path = Path(name)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.rglob("*") if p.is_file() and p.name.endswith(_TRACE_SUFFIXES)
            )
            if not found:
                problems.append(f"{name}: no trace files (*.jsonl, *.jsonl.gz) in this directory")
            files.extend(found)
        else:
            files.append(name)
    return files, problems


def run(args: argparse.Namespace) -> int:
    files, troubles = expand(args.paths)
    results: list[ValidationResult] = []
    for path in files:
        try:
            results.append(validate_trace(path))
        except InputError as error:
            troubles.append(str(error))
    if args.json:
        document = {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "valid": not troubles and all(r.valid for r in results),
            "files": [r.to_dict() for r in results],
            "errors": troubles,
        }
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        for result in results:
            for finding in result.findings:
                print(escape(str(finding)))
            for warning in result.warnings:
                print(f"warning: {escape(warning)}", file=sys.stderr)
        for trouble in troubles:
            print(f"detllm: {escape(trouble)}", file=sys.stderr)
        if not args.quiet:
            invalid = sum(not r.valid for r in results)
            print(
                f"{len(results) - invalid} of {len(results)} trace files valid"
                + (f", {len(troubles)} unreadable" if troubles else ""),
                file=sys.stderr,
            )
    if troubles:
        return ExitCode.TROUBLE
    if any(not r.valid for r in results):
        return ExitCode.DIFFERENT
    return ExitCode.OK

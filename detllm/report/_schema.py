"""The JSON Schema of the report format, derived from the report's Structs.

``formats/report-v1.schema.json`` is this function's output; a test keeps the two
equal, so the schema cannot drift from what detLLM writes.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from .._schema import null_last
from ..rundir import DeterminismRecord
from ..diff.model import AggregateReport, BisectDocument, CheckReport, DiffReport, ReplayDocument, ReplayIndex, SweepRecord
from ._first_divergence import FirstDivergenceDocument


ADDED: frozenset[str] = frozenset({"concurrency", "concurrency_invariant", "concurrency_invariant_logprobs"})
"""Members added after 1.0 with a default: written only by the reports that use them."""

ADDED_TO: dict[str, frozenset[str]] = {"CheckDocument": frozenset({"replay"})}
"""Later additions to one object only (by title), absent unless used: a check's ``replay``
(``check --replay``); ``replay`` elsewhere is required."""


NAMES: dict[str, str] = {"DiffReport": "DiffDocument", "AggregateReport": "AggregateDocument", "CheckReport": "CheckDocument"}
"""The schema's name for a record that is its own JSON form (the name its document type had,
so that the schema's definitions keep their names)."""


def _renamed(node: Any) -> Any:
    if isinstance(node, dict):
        out = {NAMES.get(k, k): _renamed(v) for k, v in node.items()}
        if isinstance(out.get("$ref"), str):
            head, _, name = out["$ref"].rpartition("/")
            out["$ref"] = f"{head}/{NAMES.get(name, name)}"
        if isinstance(out.get("title"), str):
            out["title"] = NAMES.get(out["title"], out["title"])
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(_renamed(v) for v in node)
    return node


def _tidy(node: Any) -> None:
    # detLLM writes every field, null included: a reader may rely on each key
    # (except the later additions, absent from reports that do not use them).
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            later = ADDED | ADDED_TO.get(str(node.get("title")), frozenset())
            node["required"] = [name for name in node["properties"] if name not in later]
        if isinstance(node.get("description"), str):
            node["description"] = _plain(node["description"])
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)


def _plain(docstring: str) -> str:
    """A docstring as plain text: dedented, paragraphs on one line, no RST markup."""
    paragraphs = inspect.cleandoc(docstring).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs).replace("``", "`")


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every document kind of report format 1."""
    documents = (DiffReport, AggregateReport, CheckReport, FirstDivergenceDocument, BisectDocument, ReplayDocument)
    refs, components = _renamed(msgspec.json.schema_components(documents))
    _tidy(components)
    null_last(components)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "detLLM report, format version 1",
        "description": (
            "A report written by detLLM: a diff of two traces (kind 'diff'), an aggregate of many "
            "traces (kind 'aggregate'), a check of repeated runs, a batch sweep and an engine-setting "
            "sweep (kind 'check'), the first divergences of any of them (kind 'first_divergence'), or "
            "a bisect of the settings that make two runs diverge (kind 'bisect'), or a trace against a "
            "teacher-forced replay of it (kind 'replay'). "
            "formats/report-v1.md is the normative text. Readers ignore fields they do not know."
        ),
        "oneOf": list(refs),
        "$defs": components,
    }


def check_files_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a run or check directory's ``determinism_applied.json``,
    ``sweep.json`` and ``replays/replays.json`` (``formats/check-files.schema.json``)."""
    refs, components = msgspec.json.schema_components((DeterminismRecord, SweepRecord, ReplayIndex))
    stack: list[Any] = [components]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("description"), str):
                node["description"] = _plain(node["description"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    null_last(components)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "detLLM run and check directory files, format version 1",
        "description": (
            "determinism_applied.json (format 'detllm.determinism': the controls a run's process applied), "
            "sweep.json (format 'detllm.sweep': what each variant of --sweep ran) and replays/replays.json "
            "(format 'detllm.check_replays': the replay traces of --replay) of a run or check directory. "
            "formats/run-directory.md is the normative text. Readers take every 1.x version and ignore "
            "fields they do not know."
        ),
        "oneOf": list(refs),
        "$defs": components,
    }

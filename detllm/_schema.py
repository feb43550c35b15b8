"""Build the JSON Schemas of trace lines and of ``run_config.json`` from the record Structs.

``formats/trace-v1.schema.json`` and ``formats/run-directory.schema.json`` are these
functions' output, committed so that tools that never import detLLM can use them;
``tests/test_schemas.py`` checks that they agree. Regenerate with
``python -m detllm._schema > formats/trace-v1.schema.json`` and
``python -m detllm._schema run-directory > formats/run-directory.schema.json``.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import orjson

from . import rundir
from .trace import CREATED_AT_PATTERN, FORMAT, LOGPROB_TOLERANCE, SUPPORTED_MAJOR, Footer, Header, Row


def trace_schema() -> dict[str, Any]:
    """The schema of one trace line: a header, a row or a footer."""
    _, components = msgspec.json.schema_components([Header, Row, Footer], ref_template="#/$defs/{name}")
    for definition in components.values():
        definition.pop("description", None)
    null_last(components)
    header = components["Header"]["properties"]
    header["format"] = {"const": FORMAT}
    header["version"] = {"type": "string", "pattern": rf"^{SUPPORTED_MAJOR}\.[0-9]+$"}
    header["created_at"] = {"type": "string", "format": "date-time", "pattern": CREATED_AT_PATTERN}
    components["Header"]["required"] = sorted({*components["Header"]["required"], "format", "version"})

    row = components["Row"]["properties"]
    row["prompt_id"] = {"type": "string", "minLength": 1}
    logprob = {"type": "number", "maximum": LOGPROB_TOLERANCE}
    row["logprobs"]["anyOf"][0]["items"] = logprob
    row["top_logprobs"]["anyOf"][0]["items"]["items"]["prefixItems"][1] = logprob
    row["token_texts"]["anyOf"][0]["propertyNames"] = {"pattern": "^[0-9]+$"}

    digest = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
    components["Footer"]["properties"]["digest"] = digest
    components["Replay"]["properties"]["source_digest"] = dict(digest)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "detLLM trace, version 1: one line",
        "description": "Each line of a trace is one of these records; see trace-v1.md for the rules "
        "a schema cannot express (line order, footer count and digest, lengths that must agree).",
        "oneOf": [{"$ref": "#/$defs/Header"}, {"$ref": "#/$defs/Row"}, {"$ref": "#/$defs/Footer"}],
        "$defs": dict(sorted(components.items())),
    }


_NULL = {"type": "null"}


def null_last(node: Any) -> None:
    """Put ``null`` last in every ``anyOf``: msgspec 0.18 puts it first for a Struct or None."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            options = item.get("anyOf")
            if isinstance(options, list) and _NULL in options:
                options.sort(key=lambda option: option == _NULL)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def run_config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``run_config.json``, from the records of :mod:`detllm.rundir`."""
    (ref,), components = msgspec.json.schema_components([rundir.RunConfigDocument], ref_template="#/$defs/{name}")
    null_last(components)
    for definition in components.values():
        definition.pop("description", None)
    document = components["RunConfigDocument"]["properties"]
    document["format"] = {"const": rundir.RUN_CONFIG_FORMAT}
    document["version"] = {"type": "string", "pattern": rf"^{rundir.SUPPORTED_MAJOR}\.[0-9]+$"}
    components["PromptEntry"]["oneOf"] = [{"required": ["prompt"]}, {"required": ["input_ids"]}]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "detLLM run_config.json, version 1",
        "description": "The settings, prompts and (in a check directory) the plan of traces of a run, check or "
        "pack directory; see run-directory.md for the rest of the directory.",
        "$ref": ref["$ref"],
        "$defs": dict(sorted(components.items())),
    }


def main() -> None:
    schema = run_config_schema() if sys.argv[1:] == ["run-directory"] else trace_schema()
    sys.stdout.buffer.write(orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()

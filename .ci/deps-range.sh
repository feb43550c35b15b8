#!/usr/bin/env bash
# The light suite (no torch) against the lowest and the newest allowed orjson and msgspec.
#
# Readers word their errors from detLLM's own checks, not from a library's message, and
# the JSON Schemas are generated from the Structs: both must come out the same whatever
# version pyproject.toml admits. Keep LOWEST in step with pyproject.toml's lower bounds.
set -euo pipefail

cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
root="${DEPS_VENVS:-$(mktemp -d)}"
LOWEST=("msgspec==0.18.6" "orjson==3.9.0")
NEWEST=("msgspec" "orjson")

for name in lowest newest; do
    venv="$root/$name"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    if [ "$name" = lowest ]; then pins=("${LOWEST[@]}"); else pins=("${NEWEST[@]}"); fi
    "$venv/bin/pip" install -q --upgrade "${pins[@]}" "pytest>=7" "hypothesis>=6.80" "jsonschema>=4.18"
    "$venv/bin/python" -c 'import msgspec, orjson; print("msgspec", msgspec.__version__, "orjson", orjson.__version__)'
    PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not vllm and not smollm"
done

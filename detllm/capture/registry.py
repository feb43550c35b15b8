"""Backends by name, imported only when asked for."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaptureError, UsageError
from .backend import Backend

BACKENDS: dict[str, str] = {
    "hf": "detllm.capture.hf:HFBackend",
    "vllm": "detllm.capture.vllm:VLLMBackend",
    "openai": "detllm.capture.openai:OpenAIBackend",
}
"""Backend name -> ``module:class``. The class is built from a :class:`BackendConfig`."""

STARTUP_LOGPROBS: dict[str, str] = {"vllm": "logprob_mode"}
"""Backends that fix the logprobs' meaning (raw or processed) when they start, and
the backend option that sets it: a run passes its ``logprobs`` setting through it."""


@dataclass(frozen=True)
class BackendConfig:
    """What every backend is created from."""

    model: str
    """A local directory, a built-in model name, or a hub id available offline."""
    tokenizer: str | None = None
    revision: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    max_batch_size: int = 1
    """The largest batch the backend will be given (vLLM sizes its scheduler with it)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Backend-specific settings, recorded in the header's ``backend_settings``."""


def load_backend(name: str, config: BackendConfig) -> Backend:
    """Create the backend ``name``; its heavy imports happen here, not before."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise UsageError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})") from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # A backend whose library is missing: one line, not a traceback.
        raise CaptureError(f"the {name} backend cannot be loaded: {exc}") from None
    backend_class = getattr(module, class_name)
    return backend_class(config)  # type: ignore[no-any-return]

"""The engine settings ``detllm check --sweep`` can vary, per backend: one table.

Each :class:`Setting` says where a value goes in a :class:`~detllm.capture.runner.RunConfig`
(a backend option, the dtype or the thread count), how a value is read from the command
line, whether a new value needs a new engine, and how the value really applied is read
back from the trace header the engine wrote. Nothing here imports torch or vLLM: the
read-back works on headers, so a sweep is judged from its traces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UsageError
from ..trace import Header

Where = Literal["option", "dtype", "threads"]

CHUNK_TOKENS = 16
"""``max_num_batched_tokens`` given with ``enable_chunked_prefill=true`` unless the
baseline sets it: small enough that prompts of more than 16 tokens are prefilled in
chunks, which is what the setting is swept to find out."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int(text: str) -> int:
    value = int(text.strip())
    if value < 1:
        raise ValueError("expected an integer of at least 1")
    return value


def _str(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("expected a name")
    return value


def _dtype(text: str) -> str:
    value = text.strip()
    if value not in ("float32", "bfloat16", "float16"):
        raise ValueError("expected float32, bfloat16 or float16")
    return value


def _setting(key: str) -> Callable[[Header], Any]:
    def read(header: Header) -> Any:
        return header.backend_settings.get(key)

    return read


def _dtype_of(header: Header) -> Any:
    return header.dtype


def _chunked(value: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    if value is True and "max_num_batched_tokens" not in options:
        return {"max_num_batched_tokens": CHUNK_TOKENS}
    return {}


def _no_companions(value: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _member(applied: Any, requested: Any) -> bool:
    """The attention backend: vLLM reports the implementations of the model's layers."""
    return isinstance(applied, list) and requested in applied


def _equal(applied: Any, requested: Any) -> bool:
    return bool(applied == requested)


def _gpu_only(header: Header) -> str | None:
    platform = header.backend_settings.get("platform")
    if platform == "cpu":
        version = header.backend_settings.get("vllm")
        return (
            f"vLLM {version} has no batch-invariant mode on CPU (it needs Triton kernels, which have no CPU "
            "backend); it runs on NVIDIA GPUs of compute capability 8.0 or higher, AMD Instinct GPUs and Intel XPUs"
        )
    return None


def _supported(header: Header) -> str | None:
    return None


@dataclass(frozen=True)
class Setting:
    """One sweepable setting of one backend."""

    name: str
    where: Where
    """``option``: ``RunConfig.options[name]``; ``dtype``: ``RunConfig.dtype``;
    ``threads``: ``RunConfig.threads``."""
    parse: Callable[[str], Any]
    fresh_engine: bool
    """A new value needs a new engine (or model load): it runs in a fresh process."""
    read_back: Callable[[Header], Any]
    """The value the engine applied, from the header of the trace it wrote."""
    matches: Callable[[Any, Any], bool] = _equal
    """``matches(applied, requested)``: the engine did what was asked."""
    companions: Callable[[Any, Mapping[str, Any]], dict[str, Any]] = _no_companions
    """Backend options set together with a value (``options``: the baseline's)."""
    unsupported: Callable[[Header], str | None] = _supported
    """Why the platform of the baseline (its trace header) cannot run the setting, or None."""


def _vllm(name: str, parse: Callable[[str], Any], **more: Any) -> Setting:
    return Setting(name=name, where="option", parse=parse, fresh_engine=True, read_back=_setting(name), **more)


SETTINGS: dict[str, dict[str, Setting]] = {
    "hf": {
        "attn_implementation": Setting(
            name="attn_implementation", where="option", parse=_str, fresh_engine=True,
            read_back=_setting("attn_implementation"),
        ),
        "dtype": Setting(name="dtype", where="dtype", parse=_dtype, fresh_engine=True, read_back=_dtype_of),
        "threads": Setting(name="threads", where="threads", parse=_int, fresh_engine=False, read_back=_setting("num_threads")),
    },
    "vllm": {
        "enable_prefix_caching": _vllm("enable_prefix_caching", _bool),
        "enable_chunked_prefill": _vllm("enable_chunked_prefill", _bool, companions=_chunked),
        "max_num_batched_tokens": _vllm("max_num_batched_tokens", _int),
        "enforce_eager": _vllm("enforce_eager", _bool),
        "max_num_seqs": _vllm("max_num_seqs", _int),
        "attention_backend": _vllm("attention_backend", _str, matches=_member),
        "kv_cache_dtype": _vllm("kv_cache_dtype", _str),
        "block_size": _vllm("block_size", _int),
        "tensor_parallel_size": _vllm("tensor_parallel_size", _int),
        "batch_invariant": _vllm("batch_invariant", _bool, unsupported=_gpu_only),
        "dtype": Setting(name="dtype", where="dtype", parse=_dtype, fresh_engine=True, read_back=_dtype_of),
    },
}
"""Backend -> setting name -> :class:`Setting`."""

PREFIX_CACHE = "enable_prefix_caching"
"""The setting whose ``true`` value is probed cold and warm (see ``capture/_prefix_probe.py``)."""


def setting(backend: str, name: str) -> Setting:
    table = SETTINGS.get(backend, {})
    try:
        return table[name]
    except KeyError:
        known = ", ".join(table) or "none"
        raise UsageError(f"--sweep {name}: not a setting the {backend} backend can sweep (choose from {known})") from None


def parse_sweep(text: str, backend: str) -> tuple[Setting, list[Any]]:
    """``"KEY=V1,V2"`` -> the setting and its values, parsed."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise UsageError(f"--sweep {text!r}: expected KEY=V1,V2,...")
    found = setting(backend, key.strip())
    parsed: list[Any] = []
    for part in values.split(","):
        try:
            value = found.parse(part)
        except ValueError as exc:
            raise UsageError(f"--sweep {key.strip()}: value {part.strip()!r}: {exc}") from None
        if value in parsed:
            raise UsageError(f"--sweep {key.strip()}: value {part.strip()!r} given twice")
        parsed.append(value)
    return found, parsed

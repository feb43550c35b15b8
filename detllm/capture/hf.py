"""The Hugging Face transformers backend (``--backend hf``).

Decoder-only models, batched with left padding and an attention mask. Decoding is
done by detLLM's own loop (``_hf_decode``), which takes the steps of
``model.generate`` for greedy search and sampling and records each step's
logprobs as it goes. Temperature, top-k and top-p are applied by transformers'
own logits warpers, in the order ``generate`` applies them.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Sequence
from typing import Any

from ..errors import CaptureError
from ..trace import Decoding, Row, Software
from .backend import BackendDescription, ForcedSequence, ForcedStep, LogprobMode, Prompt, resolve_decoding, row_seed
from .models import artifacts, resolve_model
from .registry import BackendConfig

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise CaptureError(
        f"the hf backend needs torch and transformers ({exc.name or exc} is missing): "
        "pip install 'detllm[hf]'"
    ) from None

from ._hf_decode import ForwardStyle, decode
from ._hf_score import score as score_forced

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
OPTIONS = ("attn_implementation", "eos_token_ids")
"""Backend options (``BackendConfig.options``): ``attn_implementation`` is passed to
``from_pretrained`` (``eager``, ``sdpa``, ...); ``eos_token_ids`` replaces the
model's end-of-sequence tokens."""


class HFBackend:
    """A transformers causal language model, loaded once, generating batch by batch."""

    name = "hf"

    def __init__(self, config: BackendConfig) -> None:
        unknown = sorted(set(config.options) - set(OPTIONS))
        if unknown:
            raise CaptureError(f"the hf backend has no option {unknown[0]!r} (options: {', '.join(OPTIONS)})")
        if config.dtype not in DTYPES:
            raise CaptureError(f"the hf backend does not support dtype {config.dtype!r} (choose from {', '.join(DTYPES)})")
        self.config = config
        self.device = _device(config.device)
        self.location = resolve_model(config.model, config.revision)
        self.tokenizer_location = resolve_model(config.tokenizer) if config.tokenizer else self.location
        self.tokenizer = _load(AutoTokenizer, self.tokenizer_location.path)
        load_options: dict[str, Any] = {_dtype_argument(): DTYPES[config.dtype]}
        if "attn_implementation" in config.options:
            load_options["attn_implementation"] = config.options["attn_implementation"]
        model = _load(AutoModelForCausalLM, self.location.path, **load_options)
        if getattr(model.config, "is_encoder_decoder", False):
            raise CaptureError(f"model {config.model!r} is an encoder-decoder model; the hf backend runs decoder-only models")
        self.model = model.to(self.device).eval()
        self.style = ForwardStyle.of(self.model)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None
        )
        self.model_artifact, self.tokenizer_artifact = artifacts(config, self.location, self.tokenizer_location)
        self._texts: dict[int, str] = {}

    # -- Backend protocol ------------------------------------------------------------

    def describe(self) -> BackendDescription:
        return BackendDescription(
            backend=Software(name="transformers", version=transformers.__version__),
            model=self.model_artifact,
            tokenizer=self.tokenizer_artifact,
            dtype=self.config.dtype,
            device=str(self.device),
            settings=self._settings(),
        )

    def resolve_decoding(self, decoding: Decoding) -> Decoding:
        return resolve_decoding(decoding, "hf")

    def generate(
        self,
        batch: Sequence[Prompt],
        decoding: Decoding,
        *,
        top_k: int,
        logprob_mode: LogprobMode,
    ) -> list[Row]:
        decoding = self.resolve_decoding(decoding)
        if logprob_mode not in ("raw", "processed"):
            raise CaptureError(f"logprobs must be 'raw' or 'processed', got {logprob_mode!r}")
        if not 0 <= top_k <= self.vocab_size:
            raise CaptureError(f"top logprobs must be between 0 and the vocabulary size ({self.vocab_size}), got {top_k}")
        inputs = [self._input_ids(prompt, decoding.max_new_tokens) for prompt in batch]
        warp = generators = None
        if decoding.do_sample:
            assert decoding.seed is not None
            warp = _warpers(decoding)
            generators = [
                torch.Generator(device=self.device).manual_seed(row_seed(decoding.seed, prompt.id)) for prompt in batch
            ]
        with torch.inference_mode():
            generated = decode(
                self.model,
                self.style,
                inputs,
                pad_id=self.pad_id,
                eos_ids=self.eos_ids,
                max_new_tokens=decoding.max_new_tokens,
                warp=warp,
                generators=generators,
                top_k=top_k,
                processed=logprob_mode == "processed",
            )
        rows = []
        for prompt, ids, out in zip(batch, inputs, generated):
            texts = self._token_texts([*out.token_ids, *(t for step in out.top_logprobs for t, _ in step)])
            rows.append(
                Row(
                    prompt_id=prompt.id,
                    input_token_ids=ids,
                    token_ids=out.token_ids,
                    logprobs=out.logprobs,
                    top_logprobs=out.top_logprobs,
                    finish_reason=out.finish_reason,
                    token_texts=texts,
                    prompt=prompt.text,
                )
            )
        return rows

    # -- replay (Scorer) -------------------------------------------------------------------

    def score(self, batch: Sequence[ForcedSequence], *, top_k: int) -> list[list[ForcedStep]]:
        """Teacher forcing: one forward pass over the batch, left-padded (``_hf_score``)."""
        if not 0 <= top_k <= self.vocab_size:
            raise CaptureError(f"top logprobs must be between 0 and the vocabulary size ({self.vocab_size}), got {top_k}")
        for sequence in batch:
            ids = [*sequence.input_ids, *sequence.forced_ids]
            if not sequence.input_ids:
                raise CaptureError(f"replay of {sequence.prompt_id!r}: the input has no tokens")
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise CaptureError(
                    f"replay of {sequence.prompt_id!r}: token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
            if self.max_positions and len(ids) > self.max_positions:
                raise CaptureError(
                    f"replay of {sequence.prompt_id!r}: {len(ids)} tokens exceed the model's {self.max_positions} positions"
                )
        if not batch:
            return []
        return score_forced(self.model, self.style, batch, pad_id=self.pad_id, top_k=top_k)

    def token_texts(self, ids: list[int]) -> dict[int, str]:
        """Token id -> its text, for the ids given (replay fills a row's new alternatives)."""
        return self._token_texts(ids)

    def close(self) -> None:
        self.__dict__.pop("model", None)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- internals -------------------------------------------------------------------

    def _input_ids(self, prompt: Prompt, max_new_tokens: int) -> list[int]:
        if prompt.token_ids is not None:
            ids = list(prompt.token_ids)
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise CaptureError(f"prompt {prompt.id!r}: token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        else:
            ids = list(self.tokenizer(prompt.text or "", add_special_tokens=True)["input_ids"])
        if not ids:
            raise CaptureError(f"prompt {prompt.id!r} has no tokens")
        if self.max_positions and len(ids) + max_new_tokens > self.max_positions:
            raise CaptureError(
                f"prompt {prompt.id!r}: {len(ids)} prompt tokens + {max_new_tokens} new tokens exceed the model's "
                f"{self.max_positions} positions"
            )
        return ids

    def _token_texts(self, ids: list[int]) -> dict[int, str]:
        texts = {}
        for token in ids:
            text = self._texts.get(token)
            if text is None:
                text = self._texts[token] = self.tokenizer.decode(
                    [token], skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
            texts[token] = text
        return texts

    def _eos_ids(self) -> frozenset[int]:
        if "eos_token_ids" in self.config.options:
            value = self.config.options["eos_token_ids"]
        else:
            value = getattr(self.model.generation_config, "eos_token_id", None)
            if value is None:
                value = self.tokenizer.eos_token_id
        values = [value] if isinstance(value, int) else list(value or [])
        if any(not isinstance(v, int) or not 0 <= v < self.vocab_size for v in values):
            raise CaptureError(f"end-of-sequence token ids {values!r} are not all in the vocabulary")
        return frozenset(values)

    def _pad_id(self) -> int:
        for value in (self.tokenizer.pad_token_id, getattr(self.model.generation_config, "pad_token_id", None)):
            if isinstance(value, int):
                return value
        # Pads are masked out and never recorded: any id serves.
        return min(self.eos_ids) if self.eos_ids else 0

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "model_class": type(self.model).__name__,
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "torch": str(torch.__version__),
            "logits_dtype": "float32",
            "padding_side": "left",
            "pad_token_id": self.pad_id,
            "eos_token_ids": sorted(self.eos_ids),
            "add_special_tokens": True,
            "kv_cache": True,
            "decode_loop": "detllm (greedy: argmax; sampling: warpers then multinomial)",
            "sampling_generator": "one torch.Generator per prompt, seeded from sha256(seed, prompt id)",
            "num_threads": torch.get_num_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        }
        if self.device.type == "cuda":
            settings.update(
                cuda_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                cudnn_deterministic=torch.backends.cudnn.deterministic,
                cudnn_benchmark=torch.backends.cudnn.benchmark,
            )
        if self.config.options:
            settings["options"] = dict(self.config.options)
        return settings


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CaptureError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaptureError(f"device {name!r} asked for, but torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise CaptureError(f"the hf backend runs on cpu or cuda, not {name!r}")
    return device


def _dtype_argument() -> str:
    """``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    major, minor = (int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _load(factory: Any, path: Any, **options: Any) -> Any:
    """``from_pretrained`` from local files only, without progress bars."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return factory.from_pretrained(path, local_files_only=True, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise CaptureError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _warpers(decoding: Decoding) -> LogitsProcessorList:
    """The sampling transforms, as ``generate`` builds them: temperature, top-k, top-p."""
    warpers = LogitsProcessorList()
    if decoding.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(decoding.temperature))
    if decoding.top_k:
        warpers.append(TopKLogitsWarper(top_k=decoding.top_k))
    if decoding.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=decoding.top_p))
    return warpers

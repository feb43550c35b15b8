"""Helpers of the vLLM tests: is vLLM installed, and a tiny model for it.

The model is a tiny random Llama with a byte-level BPE tokenizer, built offline when
the checkout has no ``fixtures/models/tiny-llama``. Its head size, 64, is one that
vLLM's CPU attention accepts (32, 64, 80, ... are; 16 is not).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "models" / "tiny-llama"

_TEXT = (
    "The quick brown fox jumps over the lazy dog. Hello world! Déjà vu, naïve café. "
    "Reproducibility matters when serving language models; batch size should not "
    "change the answer. 0123456789 emoji 🙂 tabs\tand\nnewlines. "
) * 8


def vllm_installed() -> bool:
    """Whether the real vLLM package is importable, found without importing it.

    ``import vllm`` is no test: with ``tests/`` on ``sys.path`` and no vLLM installed,
    this directory itself imports as an empty namespace package named ``vllm``.
    """
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None and spec.origin.endswith("__init__.py")


def build(path: Path, seed: int = 0) -> Path:
    """Write the model to ``path`` (2 layers, hidden 128, 2 heads of 64) and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_TEXT], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def tiny_llama(tmp: Path) -> Path:
    """The checkout's fixture model when there is one, else a fresh build under ``tmp``."""
    if (FIXTURE / "config.json").is_file():
        return FIXTURE
    return build(tmp / "tiny-llama")

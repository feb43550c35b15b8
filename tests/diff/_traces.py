"""Building small, valid traces for tests: headers, rows, and controlled changes."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from detllm.trace import Artifact, Batch, Decoding, Header, Logprobs, Row, Software
from detllm.writer import write_trace

WORDS = [" the", " a", " cat", " sat", " on", " mat", ".", " and", " then", " it", " was", " happy", "\n", " é", " 猫"]


def header(**changes: Any) -> Header:
    base = Header(
        producer=Software(name="detllm", version="0.1.0"),
        created_at="2026-11-28T10:00:00Z",
        backend=Software(name="hf", version="5.24.0"),
        model=Artifact(id="test/model", fingerprint="sha256:" + "1" * 64),
        tokenizer=Artifact(id="test/tokenizer", fingerprint="sha256:" + "2" * 64),
        dtype="float32",
        device="cpu",
        decoding=Decoding(do_sample=False, max_new_tokens=64),
        batch=Batch(size=1),
        logprobs=Logprobs(semantics="raw", top_k=5),
    )
    return msgspec.structs.replace(base, **changes)


def row(
    prompt_id: str,
    rng: random.Random,
    length: int,
    *,
    top_k: int = 5,
    logprobs: bool = True,
    vocab: int = len(WORDS),
) -> Row:
    """A greedy row: each step's top-k list with the chosen token first."""
    tokens, lps, tops = [], [], []
    for _ in range(length):
        ids = rng.sample(range(vocab), min(top_k, vocab))
        values = sorted((-rng.uniform(0.01, 6.0) for _ in ids), reverse=True)
        step = sorted(zip(ids, values), key=lambda e: (-e[1], e[0]))
        tokens.append(step[0][0])
        lps.append(step[0][1])
        tops.append(step)
    used = {t for step in tops for t, _ in step} | set(tokens)
    return Row(
        prompt_id=prompt_id,
        input_token_ids=[rng.randrange(vocab) for _ in range(rng.randint(1, 6))],
        token_ids=tokens,
        logprobs=lps if logprobs else None,
        top_logprobs=tops if logprobs else None,
        finish_reason="length",
        token_texts={t: WORDS[t] for t in sorted(used) if t < len(WORDS)},
    )


def rows(n: int, seed: int = 0, length: int = 12, **kwargs: Any) -> list[Row]:
    rng = random.Random(seed)
    return [row(f"p{i}", rng, length, **kwargs) for i in range(n)]


def replace(r: Row, **changes: Any) -> Row:
    return msgspec.structs.replace(r, **changes)


def flip_at(r: Row, index: int, *, second: bool = True) -> Row:
    """``r`` with its token at ``index`` replaced by the step's runner-up.

    The runner-up's logprob and the top one's swap, so the row stays valid; the
    tokens after ``index`` are kept.
    """
    assert r.top_logprobs is not None and r.logprobs is not None
    step = list(r.top_logprobs[index])
    (a, va), (b, vb) = step[0], step[1]
    new_step = [(b, va), (a, vb)] + step[2:]
    tops = list(r.top_logprobs)
    tops[index] = sorted(new_step, key=lambda e: (-e[1], e[0]))
    tokens = list(r.token_ids)
    tokens[index] = b
    logprobs = list(r.logprobs)
    logprobs[index] = va
    return replace(r, token_ids=tokens, top_logprobs=tops, logprobs=logprobs)


def drift(r: Row, amount: float) -> Row:
    """Every logprob moved by ``amount`` (negative keeps them valid)."""
    assert r.top_logprobs is not None and r.logprobs is not None
    return replace(
        r,
        logprobs=[v + amount for v in r.logprobs],
        top_logprobs=[[(t, v + amount) for t, v in step] for step in r.top_logprobs],
    )


def write(path: Path, rows_: Sequence[Row], head: Header | None = None) -> Path:
    return write_trace(path, head or header(), rows_)

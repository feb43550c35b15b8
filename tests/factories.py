"""Small, valid trace records for tests."""

from __future__ import annotations

from typing import Any

from detllm import (
    Artifact,
    Batch,
    Decoding,
    Environment,
    Header,
    Logprobs,
    Row,
    Software,
)


def make_header(**changes: Any) -> Header:
    fields: dict[str, Any] = dict(
        producer=Software(name="detllm", version="0.1.0"),
        created_at="2026-11-28T12:00:00Z",
        backend=Software(name="hf", version="5.24.0"),
        model=Artifact(id="tiny-llama", fingerprint="sha256:" + "ab" * 32),
        tokenizer=Artifact(id="tiny-llama", fingerprint="sha256:" + "cd" * 32),
        dtype="float32",
        device="cpu",
        decoding=Decoding(do_sample=False, max_new_tokens=8),
        batch=Batch(size=2),
        logprobs=Logprobs(semantics="raw", top_k=3),
        environment=Environment(python="3.11.7", libraries={"torch": "2.13.0"}),
    )
    fields.update(changes)
    return Header(**fields)


def make_row(prompt_id: str = "p0", n: int = 4, **changes: Any) -> Row:
    token_ids = [10 + i for i in range(n)]
    logprobs = [-0.25 * (i + 1) for i in range(n)]
    top = [[(t, lp), (t + 100, lp - 1.0), (t + 200, lp - 2.5)] for t, lp in zip(token_ids, logprobs)]
    fields: dict[str, Any] = dict(
        prompt_id=prompt_id,
        input_token_ids=[1, 2, 3],
        token_ids=token_ids,
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason="length",
        token_texts={t: f"t{t}" for t in token_ids},
    )
    fields.update(changes)
    return Row(**fields)

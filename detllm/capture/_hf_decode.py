"""The decoding loop of the Hugging Face backend.

One batch, left-padded, with a key/value cache: the same steps as
``model.generate`` takes for greedy search and multinomial sampling, plus the
recording of each step's chosen-token logprob and top-k alternatives. Only a
``(batch, k)`` slice of each step's distribution is kept, so memory does not grow
with vocabulary x steps.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Generated:
    """What one batch row generated: tokens, and per step the recorded logprobs."""

    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]]]
    finish_reason: str


@dataclass(frozen=True)
class ForwardStyle:
    """How this model's ``forward`` is called: the names changed across library versions.

    ``cache_arg`` names the key/value cache both as an argument and in the output.
    """

    cache_arg: str
    logits_arg: str | None

    @classmethod
    def of(cls, model: torch.nn.Module) -> ForwardStyle:
        names = inspect.signature(model.forward).parameters
        cache_arg = "cache" if "cache" in names else "past_key_values"
        logits_arg = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in names), None)
        return cls(cache_arg, logits_arg)


def decode(
    model: torch.nn.Module,
    style: ForwardStyle,
    inputs: Sequence[Sequence[int]],
    *,
    pad_id: int,
    eos_ids: frozenset[int],
    max_new_tokens: int,
    warp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    generators: Sequence[torch.Generator] | None,
    top_k: int,
    processed: bool,
) -> list[Generated]:
    """Generate for ``inputs`` as one batch.

    ``warp`` (sampling only) turns float32 logits into the scores that are sampled
    from; ``generators`` gives one random generator per row. Without them the loop
    is greedy. ``processed`` records log-softmax of the warped scores instead of
    the raw logits.
    """
    device = next(model.parameters()).device
    batch = len(inputs)
    width = max(len(ids) for ids in inputs)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for i, ids in enumerate(inputs):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[i, width - len(ids) :] = 1
    input_ids = input_ids.to(device)
    mask = mask.to(device)
    # Real tokens get positions 0..n-1 whatever the padding; pads get 0 and are masked.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)

    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    steps_tokens: list[torch.Tensor] = []
    steps_chosen: list[torch.Tensor] = []
    steps_top_ids: list[torch.Tensor] = []
    steps_top_values: list[torch.Tensor] = []
    cache = None
    step_ids = input_ids
    step_positions = positions
    extra = {style.logits_arg: 1} if style.logits_arg else {}
    for _ in range(max_new_tokens):
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=step_positions,
            use_cache=True,
            **{style.cache_arg: cache},
            **extra,
        )
        cache = out[style.cache_arg]
        logits = out.logits[:, -1, :].to(dtype=torch.float32)
        del out
        if warp is None:
            tokens = torch.argmax(logits, dim=-1)
            recorded = torch.log_softmax(logits, dim=-1)
        else:
            assert generators is not None
            scores = warp(step_ids, logits)
            probs = torch.softmax(scores, dim=-1)
            tokens = torch.cat([torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(batch)])
            recorded = torch.log_softmax(scores if processed else logits, dim=-1)
        tokens = torch.where(unfinished, tokens, pad_id)
        steps_tokens.append(tokens)
        steps_chosen.append(recorded.gather(1, tokens[:, None])[:, 0])
        if top_k:
            top = torch.topk(recorded, top_k, dim=-1)
            steps_top_ids.append(top.indices)
            steps_top_values.append(top.values)
        unfinished = unfinished & ~torch.isin(tokens, eos)
        if not bool(unfinished.any()):
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=-1)
        step_ids = tokens[:, None]
        step_positions = step_positions[:, -1:] + 1
    return _split(steps_tokens, steps_chosen, steps_top_ids, steps_top_values, eos_ids, max_new_tokens, top_k)


def _split(
    steps_tokens: list[torch.Tensor],
    steps_chosen: list[torch.Tensor],
    steps_top_ids: list[torch.Tensor],
    steps_top_values: list[torch.Tensor],
    eos_ids: frozenset[int],
    max_new_tokens: int,
    top_k: int,
) -> list[Generated]:
    """Per-step tensors -> per-row lists, cut after each row's first EOS."""
    tokens = torch.stack(steps_tokens, dim=1).tolist()
    chosen = torch.stack(steps_chosen, dim=1).tolist()
    if top_k:
        top_ids = torch.stack(steps_top_ids, dim=1).tolist()
        top_values = torch.stack(steps_top_values, dim=1).tolist()
    rows = []
    for i, row_tokens in enumerate(tokens):
        end = next((j + 1 for j, t in enumerate(row_tokens) if t in eos_ids), None)
        reason = "stop" if end is not None else "length"
        n = end if end is not None else len(row_tokens)
        assert reason == "stop" or n == max_new_tokens
        top = [list(zip(top_ids[i][j], top_values[i][j])) for j in range(n)] if top_k else [[] for _ in range(n)]
        rows.append(Generated(row_tokens[:n], chosen[i][:n], top, reason))
    return rows

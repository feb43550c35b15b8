"""Teacher forcing for the Hugging Face backend: one forward pass per batch of sequences.

Each sequence is its input ids followed by the tokens a run generated. The batch is
left-padded with an attention mask, as the decoding loop pads it, and run once without
a key/value cache. Only the logits of the positions that predict a forced token are
kept (``logits_to_keep`` where the model takes it), and each row's log-softmax is taken
over its own positions only, so beyond the model's own output one row's
``(forced tokens, vocabulary)`` slice is live at a time; what is returned is ``O(k)``
per position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._hf_decode import ForwardStyle
from .backend import ForcedSequence, ForcedStep


def score(
    model: torch.nn.Module,
    style: ForwardStyle,
    batch: Sequence[ForcedSequence],
    *,
    pad_id: int,
    top_k: int,
) -> list[list[ForcedStep]]:
    """Per sequence, one :class:`ForcedStep` per forced token.

    Logprobs are raw: the float32 log-softmax of the logits, as the decoding loop
    records them. A rank is ``1 +`` the number of tokens with a larger logprob, or an
    equal one and a lower id, exact over the whole vocabulary: 1 is the token greedy
    decoding (argmax, which takes the first maximum) would choose.
    """
    device = next(model.parameters()).device
    sequences = [[*s.input_ids, *s.forced_ids] for s in batch]
    width = max(len(ids) for ids in sequences)
    longest = max(len(s.forced_ids) for s in batch)
    if longest == 0:
        return [[] for _ in batch]
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(sequences):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[i, width - len(ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # Position p predicts the token at p + 1: the forced tokens of every row sit at the
    # right end, so the last ``longest + 1`` positions hold every prediction needed.
    keep = longest + 1
    extra = {style.logits_arg: keep} if style.logits_arg else {}
    with torch.inference_mode():
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            **extra,
        )
        logits = out.logits[:, -keep:, :]
        del out
        results = []
        for i, sequence in enumerate(batch):
            n = len(sequence.forced_ids)
            if n == 0:
                results.append([])
                continue
            # Row i's forced tokens are the last n of the batch's width; the logits that
            # predict them are at the n positions before the last.
            row = torch.log_softmax(logits[i, keep - 1 - n : keep - 1, :].to(dtype=torch.float32), dim=-1)
            forced = torch.tensor(sequence.forced_ids, dtype=torch.long, device=row.device)
            chosen = row.gather(1, forced[:, None])
            # Ties go to the lower token id, as argmax takes the first maximum.
            lower = torch.arange(row.shape[-1], device=row.device)[None, :] < forced[:, None]
            ranks = (row > chosen).sum(dim=-1) + ((row == chosen) & lower).sum(dim=-1) + 1
            if top_k:
                top = torch.topk(row, top_k, dim=-1)
                top_ids, top_values = top.indices.tolist(), top.values.tolist()
            else:
                top_ids = top_values = [[] for _ in range(n)]
            results.append(
                [
                    ForcedStep(logprob=lp, rank=rank, top_ids=tuple(ids), top_logprobs=tuple(values))
                    for lp, rank, ids, values in zip(chosen[:, 0].tolist(), ranks.tolist(), top_ids, top_values)
                ]
            )
            del row
    return results

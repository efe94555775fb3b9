"""Greedy generation with a causal LM, batched with left padding (held-out accuracy, iterative kMQ)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def greedy_generate(model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, eos: int | None,
                    pad: int, device: str, batch_size: int = 16) -> list[list[int]]:
    """The new tokens each prompt continues with, greedy, up to `max_new_tokens` (stopping at `eos`).

    Prompts run in batches of similar length (sorted), left-padded with an attention mask, so that every row's
    last prompt token sits at the same position; one at a time for recurrent architectures, whose state would
    take the padding in.
    """
    import torch

    from curate.models.architecture import recurrent_state

    if recurrent_state(model) is not None:  # a recurrent state reads the left padding too (RWKV): no padding
        batch_size = 1
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            batch = order[b: b + batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                n = len(prompts[i])
                ids[r, width - n:] = torch.tensor(list(prompts[i]), dtype=torch.long)
                mask[r, width - n:] = 1
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                       eos_token_id=eos)
            for r, i in enumerate(batch):
                new = generated[r, width:].tolist()
                if eos is not None and eos in new:
                    new = new[: new.index(eos)]
                out[i] = new
    model.train(was_training)
    return out

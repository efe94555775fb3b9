"""Fused chunked cross-entropy: per-token NLL of the LM head without full-vocabulary logits (docs/methods.md §0.2).

`token_nll(hidden, weight, labels, bias=None, chunk_size=4096)` takes the last hidden states of the
scored positions (N, H), the LM head weight (V, H) (and bias (V,)), and the next-token labels (N,), and
returns the NLL of each label in float32: `logsumexp_v(h·w_v + b_v) - (h·w_label + b_label)`. Logits are
formed one vocabulary tile at a time with an online logsumexp, so memory is O(N · chunk_size), never
O(N · V) in float32. Labels equal to `IGNORE_INDEX` (-100) get NLL 0.

`sequence_nll(nll, mask)` reduces per-token NLL of shape (B, T) over a 0/1 loss mask to per-sequence
(sum, mean, count).

`token_nll` dispatches on the device: the Triton kernel on CUDA (`kernels.triton_ce`, when Triton is
installed), the torch reference below everywhere else. Both have the same signature and semantics.
This module imports nothing from `curate`.
"""

from __future__ import annotations

import torch

from .common import IGNORE_INDEX, fold_logsumexp_, triton_available

__all__ = ["IGNORE_INDEX", "sequence_nll", "token_nll", "token_nll_reference"]
# what tl.dot takes; anything else (e.g. float64) stays on the reference
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def token_nll_reference(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                        bias: torch.Tensor | None = None, chunk_size: int = 4096) -> torch.Tensor:
    """Per-token NLL (float32, shape (N,)) with an online logsumexp over vocabulary tiles (plain torch)."""
    n = hidden.shape[0]
    device = hidden.device
    running_max = torch.full((n,), float("-inf"), dtype=torch.float32, device=device)
    running_sum = torch.zeros(n, dtype=torch.float32, device=device)
    target = torch.zeros(n, dtype=torch.float32, device=device)
    valid = labels != IGNORE_INDEX
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels)).long()  # gather wants int64
    vocab = weight.shape[0]
    for start in range(0, vocab, chunk_size):
        stop = min(start + chunk_size, vocab)
        # The tile's logits in float32 (the matmul itself may run in the inputs' dtype, as on GPU). The ops
        # below work in place on this fresh tensor, so the peak is one (N, chunk) float32 tile, not three.
        logits = (hidden @ weight[start:stop].T).float()
        if bias is not None:
            logits += bias[start:stop].float()
        # The label logit of rows whose label falls in this tile (a gather, not a data-dependent index, so
        # there is no host sync per tile on GPU); read before the in-place exp below.
        inside = (safe_labels >= start) & (safe_labels < stop)
        column = (safe_labels - start).clamp(0, stop - start - 1)
        target += torch.where(inside, logits.gather(1, column[:, None]).squeeze(1), 0.0)
        running_max, running_sum = fold_logsumexp_(running_max, running_sum, logits)  # a -inf bias gives no NaN
        del logits  # free this tile before the next tile's matmul allocates its own: one tile alive, not two
    nll = running_max + torch.log(running_sum) - target
    return torch.where(valid, nll, torch.zeros_like(nll))


def token_nll(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
              bias: torch.Tensor | None = None, chunk_size: int = 4096) -> torch.Tensor:
    """Per-token NLL (float32, (N,)): the Triton kernel on CUDA (fp32/fp16/bf16), the torch reference elsewhere.
    `chunk_size` is the reference's vocabulary tile; the Triton kernel ignores it (its tiles are fixed)."""
    if hidden.is_cuda and hidden.dtype in _TRITON_DTYPES and triton_available():
        from .triton_ce import token_nll_triton

        return token_nll_triton(hidden, weight, labels, bias, chunk_size)
    return token_nll_reference(hidden, weight, labels, bias, chunk_size)


def sequence_nll(nll: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sequence (sum, mean, count) of token NLL (B, T) over a 0/1 loss mask (B, T); mean is NaN
    for a sequence with no scored token."""
    mask = mask.to(nll.dtype)
    total = (nll * mask).sum(dim=1)
    count = mask.sum(dim=1)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
    return total, mean, count

"""Log-domain Sinkhorn half-steps with the squared-distance cost computed on the fly (docs/methods.md §5.4, §5.7).

`sinkhorn_update(x, y, potential, log_weights, eps)` returns, for every row i of `x` (M, d),

    out_i = eps * log_weights_i - eps * logsumexp_j((potential_j - C_ij) / eps),   C_ij = ||x_i - y_j||²

over the rows j of `y` (N, d). With x = targets, y = candidates and potential = g it is the f-update of
entropic OT; `sinkhorn_update(y, x, f, log_b, eps)` is its transpose (the g-update). The M x N cost is never
stored: it is formed tile by tile (`block` rows and columns, the ott-jax `batch_size` of 2000 by default) as
|x|² + |y|² - 2 x·y, clamped at 0, and folded into an online logsumexp. Memory beyond the inputs is one
block x block tile, so O((M + N)·d) overall.

It dispatches on the device: the Triton kernel (`kernels.triton_sinkhorn`) on CUDA float32, the torch
reference below everywhere else (float32 or float64). Both have the same signature and semantics; the cost and
the reduction are in float32 or wider, never bf16 (C/eps reaches 1e2-1e3, §5.6). Imports nothing from `curate`.
"""

from __future__ import annotations

import torch

from .common import fold_logsumexp_, triton_available

__all__ = ["logsumexp_cost", "logsumexp_cost_reference", "sinkhorn_update"]
DEFAULT_BLOCK = 2000


def _check(x: torch.Tensor, y: torch.Tensor, potential: torch.Tensor) -> None:
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x (M, d) and y (N, d) expected, got {tuple(x.shape)} and {tuple(y.shape)}")
    if potential.shape != (y.shape[0],):
        raise ValueError(f"potential of shape ({y.shape[0]},) expected, got {tuple(potential.shape)}")
    if x.dtype != y.dtype or x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x and y must share a float32 or float64 dtype, got {x.dtype} and {y.dtype}")


def logsumexp_cost_reference(x: torch.Tensor, y: torch.Tensor, potential: torch.Tensor, eps: float,
                             block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """logsumexp_j((potential_j - ||x_i - y_j||²) / eps) for every row i, in tiles of `block` x `block` (torch)."""
    _check(x, y, potential)
    m, n = x.shape[0], y.shape[0]
    dtype, device = x.dtype, x.device
    out = torch.empty(m, dtype=dtype, device=device)
    if n == 0:
        return out.fill_(float("-inf"))
    x_sq = (x * x).sum(1)
    y_sq = (y * y).sum(1)
    scaled = potential.to(dtype) / eps
    for r0 in range(0, m, block):
        r1 = min(r0 + block, m)
        run_max = torch.full((r1 - r0,), float("-inf"), dtype=dtype, device=device)
        run_sum = torch.zeros(r1 - r0, dtype=dtype, device=device)
        for c0 in range(0, n, block):
            c1 = min(c0 + block, n)
            # -C/eps + g/eps in place on the fresh matmul output: one tile alive at a time
            tile = torch.addmm(x_sq[r0:r1, None] + y_sq[None, c0:c1], x[r0:r1], y[c0:c1].T, alpha=-2.0)
            tile.clamp_(min=0).div_(-eps).add_(scaled[None, c0:c1])
            run_max, run_sum = fold_logsumexp_(run_max, run_sum, tile)
            del tile
        out[r0:r1] = run_max + torch.log(run_sum)
    return out


def logsumexp_cost(x: torch.Tensor, y: torch.Tensor, potential: torch.Tensor, eps: float,
                   block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """The Triton kernel on CUDA float32 inputs, the torch reference elsewhere (same result, same signature)."""
    if x.is_cuda and x.dtype == torch.float32 and triton_available():
        from .triton_sinkhorn import logsumexp_cost_triton

        return logsumexp_cost_triton(x, y, potential, eps)
    return logsumexp_cost_reference(x, y, potential, eps, block)


def sinkhorn_update(x: torch.Tensor, y: torch.Tensor, potential: torch.Tensor, log_weights: torch.Tensor,
                    eps: float, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """One log-domain Sinkhorn half-step: eps·log_weights_i - eps·logsumexp_j((potential_j - C_ij)/eps)."""
    if log_weights.shape != (x.shape[0],):
        raise ValueError(f"log_weights of shape ({x.shape[0]},) expected, got {tuple(log_weights.shape)}")
    return eps * (log_weights.to(x.dtype) - logsumexp_cost(x, y, potential, eps, block))

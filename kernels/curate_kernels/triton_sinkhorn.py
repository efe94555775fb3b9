"""Triton kernel for the Sinkhorn half-step reduction (docs/methods.md §5.7): `logsumexp_cost_triton(x, y,
potential, eps)` has the semantics of `sinkhorn.logsumexp_cost_reference`, float32 in and out.

Design. The grid is (row blocks of x, column splits of y). A program takes BLOCK_M rows of x and one
contiguous span of y's rows, walks it in BLOCK_N tiles, forms each (BLOCK_M, BLOCK_N) tile of x·yᵀ with
`tl.dot` over BLOCK_D slices of the dimension (fp32, IEEE precision: TF32's 10-bit mantissa would move C/eps by
~1e-2), turns it into (g_j - C_ij)/eps with the precomputed squared norms, and folds it into a running max and
sum. Each program writes one partial logsumexp per row; torch merges the splits. Splitting y keeps the GPU busy
when x has few rows (1k targets are 16 row blocks): the f-update over 1M candidates runs as 16 x splits programs.
Memory beyond the inputs: splits x M floats.

`TRITON_INTERPRET` is read when `@triton.jit` runs, i.e. when this module is imported: set it before.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import fold_logsumexp


@triton.jit
def _partial_lse_cost_kernel(
    x_ptr, y_ptr, xsq_ptr, ysq_ptr, pot_ptr, out_ptr,
    m_rows, n_rows, dim, span, inv_eps,
    stride_x, stride_y,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < m_rows
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_x
    x_sq = tl.load(xsq_ptr + rows, mask=row_ok, other=0.0)

    run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)
    c_begin = pid_s * span
    c_end = tl.minimum(c_begin + span, n_rows)
    for c0 in range(c_begin, c_end, BLOCK_N):
        cols = c0 + tl.arange(0, BLOCK_N)
        col_ok = cols < c_end
        y_cols = y_ptr + cols.to(tl.int64)[None, :] * stride_y
        dots = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, dim, BLOCK_D):
            ks = k0 + tl.arange(0, BLOCK_D)
            k_ok = ks < dim
            a = tl.load(x_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(y_cols + ks[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)  # (BLOCK_D, BLOCK_N)
            dots = tl.dot(a, b, dots, input_precision="ieee")
        y_sq = tl.load(ysq_ptr + cols, mask=col_ok, other=0.0)
        pot = tl.load(pot_ptr + cols, mask=col_ok, other=0.0)
        cost = tl.maximum(x_sq[:, None] + y_sq[None, :] - 2.0 * dots, 0.0)
        z = (pot[None, :] - cost) * inv_eps
        z = tl.where(col_ok[None, :], z, float("-inf"))  # columns past the span add exp(-inf) = 0

        run_max, run_sum = fold_logsumexp(run_max, run_sum, z)  # a row with only -inf so far: no NaN

    tl.store(out_ptr + pid_s * m_rows + rows, run_max + tl.log(run_sum), mask=row_ok)


def _num_splits(m_rows: int, n_rows: int, block_m: int, block_n: int, device: torch.device) -> int:
    """Column splits so that the grid has about two programs per SM (one split off CUDA)."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(2 * sms, triton.cdiv(m_rows, block_m)), triton.cdiv(n_rows, block_n)))


def logsumexp_cost_triton(x: torch.Tensor, y: torch.Tensor, potential: torch.Tensor, eps: float, *,
                          splits: int | None = None, blocks: tuple[int, int, int] = (64, 64, 32)) -> torch.Tensor:
    """logsumexp_j((potential_j - ||x_i - y_j||²)/eps) per row of x (float32, (M,)). `splits` (column splits)
    and `blocks` ((BLOCK_M, BLOCK_N, BLOCK_D), each >= 16) override the defaults."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x (M, d) and y (N, d) expected, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != torch.float32 or y.dtype != torch.float32:
        raise TypeError(f"the Triton kernel takes float32 x and y, got {x.dtype} and {y.dtype}")
    m, dim = x.shape
    n = y.shape[0]
    if potential.shape != (n,):
        raise ValueError(f"potential of shape ({n},) expected, got {tuple(potential.shape)}")
    if n == 0 or m == 0:
        return torch.full((m,), float("-inf"), dtype=torch.float32, device=x.device)
    x = x if x.stride(1) == 1 else x.contiguous()
    y = y if y.stride(1) == 1 else y.contiguous()
    x_sq = (x * x).sum(1).contiguous()
    y_sq = (y * y).sum(1).contiguous()
    potential = potential.to(torch.float32).contiguous()
    block_m, block_n, block_d = blocks
    n_splits = splits or _num_splits(m, n, block_m, block_n, x.device)
    span = triton.cdiv(triton.cdiv(n, n_splits), block_n) * block_n  # whole tiles per split, none empty
    n_splits = triton.cdiv(n, span)
    partial = torch.empty((n_splits, m), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(m, block_m), n_splits)
    _partial_lse_cost_kernel[grid](
        x, y, x_sq, y_sq, potential, partial,
        m, n, dim, span, 1.0 / eps,
        x.stride(0), y.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=4, num_stages=2,
    )
    return torch.logsumexp(partial, dim=0) if n_splits > 1 else partial[0]

"""Triton kernel for the fused chunked cross-entropy (docs/methods.md §0.2): per-token NLL without full logits.

`token_nll_triton(hidden, weight, labels, bias=None, chunk_size=4096)` has the semantics of
`chunked_ce.token_nll_reference`: float32 `logsumexp_v(h·w_v + b_v) - (h·w_label + b_label)` per token,
0 where the label is -100. Forward only (scoring).

Design. The grid is (row blocks, vocabulary splits). A program takes BLOCK_N tokens and one contiguous
span of the vocabulary, walks it in BLOCK_V tiles, forms each (BLOCK_N, BLOCK_V) logit tile with `tl.dot`
over BLOCK_H slices of the hidden size (fp32 accumulator, whatever the input dtype), and folds the tile into
a running max / running sum (online logsumexp); the label's logit is picked up in the tile that holds it.
Each program writes one partial logsumexp and one partial label logit per token; a tiny torch step merges the
splits. Splitting the vocabulary keeps the GPU busy when there are few row blocks (8k tokens are 64 blocks
of 128, fewer than an H100's 132 SMs). Memory beyond the inputs: 2 · splits · N floats.

`chunk_size` is accepted for interface compatibility and ignored: tiles are the BLOCK_* constants and the
number of splits follows the SM count (on CPU tensors under `TRITON_INTERPRET=1`: one split).

`TRITON_INTERPRET` is read when `@triton.jit` runs, i.e. when this module is imported: set it before.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import IGNORE_INDEX
from .triton_common import fold_logsumexp

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _partial_lse_kernel(
    h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, tgt_ptr,
    n_rows, vocab, hidden_size, span,
    stride_h, stride_w,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """Partial logsumexp and label logit of BLOCK_N tokens over the vocabulary span of split program_id(1)."""
    pid_n = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    # int64 offsets: N·H or V·H can pass 2^31 for real batches / vocabularies
    h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_h
    labels = tl.load(y_ptr + rows, mask=row_ok, other=-100)  # IGNORE_INDEX (jit sees no globals)

    run_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_N], tl.float32)
    target = tl.zeros([BLOCK_N], tl.float32)
    v_begin = pid_v * span
    v_end = tl.minimum(v_begin + span, vocab)
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_ok = cols < v_end
        w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_w
        logits = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for k0 in range(0, hidden_size, BLOCK_H):
            ks = k0 + tl.arange(0, BLOCK_H)
            k_ok = ks < hidden_size
            # masked lanes load 0, which adds nothing to the dot product
            h = tl.load(h_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_cols + ks[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)  # (BLOCK_H, BLOCK_V)
            if UPCAST:
                # the interpreter multiplies bf16 as raw uint16 bits; bf16 -> fp32 is exact, so the fp32 product
                # equals a bf16 dot with fp32 accumulation
                h = h.to(tl.float32)
                w = w.to(tl.float32)
            logits = tl.dot(h, w, logits, input_precision=PRECISION)
        if HAS_BIAS:
            logits += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        # columns past the span must not count in the sum: exp(-inf) = 0
        logits = tl.where(col_ok[None, :], logits, float("-inf"))

        run_max, run_sum = fold_logsumexp(run_max, run_sum, logits)  # a -inf bias gives no NaN
        # exactly one column of one tile matches a valid label; ignored labels (-100) match none
        target += tl.sum(tl.where(cols[None, :] == labels[:, None], logits, 0.0), axis=1)

    out = pid_v * n_rows + rows
    tl.store(lse_ptr + out, run_max + tl.log(run_sum), mask=row_ok)
    tl.store(tgt_ptr + out, target, mask=row_ok)


def _tiles(dtype: torch.dtype) -> tuple[int, int, int, int, int]:
    """(BLOCK_N, BLOCK_V, BLOCK_H, num_warps, num_stages): fp32 tiles use half the K slice so that three
    pipeline stages of shared memory fit. Not yet tuned on a GPU."""
    if dtype == torch.float32:
        return 64, 128, 32, 4, 3
    return 128, 128, 64, 8, 3


def _num_splits(n_rows: int, vocab: int, block_n: int, block_v: int, device: torch.device) -> int:
    """Vocabulary splits so that the grid has about two programs per SM (one split off CUDA)."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    row_blocks = triton.cdiv(n_rows, block_n)
    return max(1, min(triton.cdiv(2 * sms, row_blocks), triton.cdiv(vocab, block_v)))


def _torch_matmul_uses_tf32() -> bool:
    """Whether torch's fp32 CUDA matmuls use TF32 now. Newer torch has `fp32_precision` (which also reflects the
    legacy flag), and reading the legacy `allow_tf32` raises once the new API was used; older torch has only it."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision is not None:
        return precision == "tf32"
    return bool(matmul.allow_tf32)


def token_nll_triton(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                     bias: torch.Tensor | None = None, chunk_size: int = 4096, *,
                     splits: int | None = None, blocks: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Per-token NLL (float32, (N,)) by the Triton kernel; `chunk_size` is ignored (module docstring).
    `splits` (vocabulary splits) and `blocks` ((BLOCK_N, BLOCK_V, BLOCK_H), each >= 16) override the defaults."""
    del chunk_size  # tiles, not chunks, bound the kernel's memory
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden (N, H) and weight (V, H) expected, got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype or hidden.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"hidden and weight must share a dtype in {SUPPORTED_DTYPES}: {hidden.dtype}, {weight.dtype}")
    n, h_size = hidden.shape
    vocab = weight.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels of shape ({n},) expected, got {tuple(labels.shape)}")
    if bias is not None and bias.shape != (vocab,):
        raise ValueError(f"bias of shape ({vocab},) expected, got {tuple(bias.shape)}")
    if n == 0:
        return torch.zeros(0, dtype=torch.float32, device=hidden.device)

    # The kernel walks rows by stride and needs unit stride along H (a row-sliced view needs no copy).
    if hidden.stride(1) != 1:
        hidden = hidden.contiguous()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    labels = labels.contiguous()
    if bias is not None:
        bias = bias.contiguous()

    tile_n, tile_v, tile_h, num_warps, num_stages = _tiles(hidden.dtype)
    if blocks is not None:
        tile_n, tile_v, tile_h = blocks
    n_splits = splits or _num_splits(n, vocab, tile_n, tile_v, hidden.device)
    # Each split covers whole tiles; recompute the count so that no split is empty.
    span = triton.cdiv(triton.cdiv(vocab, n_splits), tile_v) * tile_v
    n_splits = triton.cdiv(vocab, span)

    lse = torch.empty((n_splits, n), dtype=torch.float32, device=hidden.device)
    target = torch.empty_like(lse)
    # fp32 inputs follow torch's matmul setting (TF32 only when torch would use it, so the reference agrees);
    # 16-bit inputs are exact products with fp32 accumulation either way.
    tf32 = hidden.dtype == torch.float32 and _torch_matmul_uses_tf32()
    grid = (triton.cdiv(n, tile_n), n_splits)
    _partial_lse_kernel[grid](
        hidden, weight, bias if bias is not None else hidden, labels, lse, target,
        n, vocab, h_size, span,
        hidden.stride(0), weight.stride(0),
        HAS_BIAS=bias is not None, PRECISION="tf32" if tf32 else "ieee",
        UPCAST=hidden.dtype == torch.bfloat16 and not hidden.is_cuda,  # CPU tensors: the interpreter
        BLOCK_N=tile_n, BLOCK_V=tile_v, BLOCK_H=tile_h,
        num_warps=num_warps, num_stages=num_stages,
    )
    total = torch.logsumexp(lse, dim=0) if n_splits > 1 else lse[0]
    nll = total - target.sum(dim=0)
    return torch.where(labels != IGNORE_INDEX, nll, torch.zeros_like(nll))

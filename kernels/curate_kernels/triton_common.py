"""What the Triton kernels share (`TRITON_INTERPRET` is read when `@triton.jit` runs: set it before importing)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def fold_logsumexp(run_max, run_sum, tile):
    """One step of a row-wise online logsumexp over a (rows, cols) tile: the new running max and sum of
    exp(x - max). A row whose values so far are all -inf keeps sum 0 instead of exp(-inf - -inf) = NaN."""
    new_max = tl.maximum(run_max, tl.max(tile, axis=1))
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)
    return new_max, run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(tile - shift[:, None]), axis=1)

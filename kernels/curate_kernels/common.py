"""What every kernel and its reference share (this package imports nothing from `curate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the first kernel that runs: importing IGNORE_INDEX stays cheap
    import torch

IGNORE_INDEX = -100  # a label that is not scored: no loss, no gradient (torch's cross-entropy default)


def triton_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def fold_logsumexp_(run_max: torch.Tensor, run_sum: torch.Tensor,
                    tile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a row-wise online logsumexp: the running (max, sum of exp(x - max)) after the (rows, cols)
    `tile`. The tile is overwritten (exp in place: one tile alive, not two). A row whose values so far are all -inf
    keeps sum 0 instead of exp(-inf - -inf) = NaN. The Triton kernels do the same (`triton_common`)."""
    import torch

    new_max = torch.maximum(run_max, tile.amax(dim=1))
    shift = torch.where(torch.isneginf(new_max), 0.0, new_max)
    return new_max, run_sum * torch.exp(run_max - shift) + tile.sub_(shift[:, None]).exp_().sum(1)

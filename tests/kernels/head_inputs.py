"""Random inputs of an LM head for the kernel tests: hidden states, a weight whose logits have a realistic spread
(std ~2), labels with a fraction ignored, and a bias."""

from __future__ import annotations

import torch
from curate.kernels.common import IGNORE_INDEX


def head_inputs(n: int, h: int, v: int, bias: bool = True, ignore_frac: float = 0.2,
                seed: int = 0) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) * (2.0 / h**0.5)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = IGNORE_INDEX
    return {"hidden": hidden, "weight": weight, "labels": labels,
            "bias": torch.randn(v, generator=g) if bias else None}

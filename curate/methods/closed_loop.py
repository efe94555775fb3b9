"""The arithmetic of closed-loop evaluation (docs/methods.md §13): token-matched random arms, per-arm statistics
over seeds, the paired selection-minus-random interval, and data efficiency.

All functions are pure (numbers in, numbers out), so they are tested on known answers; the `evaluate` stage
does the training.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def random_prefix(tokens: np.ndarray, order: np.ndarray, budget: float) -> np.ndarray:
    """The rows of the shortest prefix of `order` whose tokens reach `budget`, or the one before it when that is
    closer (rows drawn in a seeded order until their tokens match the selection's). All rows when the pool holds
    fewer tokens than the budget."""
    total = np.cumsum(tokens[order])
    k = int(np.searchsorted(total, budget, side="left"))
    if k >= len(order):
        return order
    if k > 0 and budget - total[k - 1] < total[k] - budget:
        return order[:k]
    return order[: k + 1]


def t_quantile(n: int) -> float:
    """The 97.5% quantile of Student's t with n - 1 degrees of freedom (a 95% two-sided interval)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std and the 95% t-interval of the mean of per-seed values (no interval from one seed)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if not len(x):
        return {"mean": None, "std": None, "ci95": None}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "std": None, "ci95": None}
    std = float(x.std(ddof=1))
    half = t_quantile(len(x)) * std / math.sqrt(len(x))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired(selection: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Selection minus baseline, seed by seed (the same seeds train both), with the paired t-interval of the
    mean difference. `excludes_zero`: the interval lies wholly on one side of 0."""
    diff = [a - b for a, b in zip(selection, baseline, strict=True)]
    out = {"diff": diff, **summarize(diff)}
    ci = out["ci95"]
    out["excludes_zero"] = bool(ci is not None and (ci[0] > 0 or ci[1] < 0))
    return out


def data_efficiency(selection_loss: float, random_points: Sequence[tuple[float, float]]) -> float | str | None:
    """How many times the selection's tokens of random data reach the selection's held-out loss.

    `random_points`: (multiple of the selection's tokens, mean loss) of the random arms. Between two arms the
    loss is taken as linear in log(multiple). The first crossing counts; `">M"` when no arm reaches the
    selection's loss (M the largest multiple), `"<m"` when even the smallest random arm is better.
    """
    points = sorted((m, loss) for m, loss in random_points if loss is not None)
    if not points or selection_loss is None:
        return None
    if points[0][1] <= selection_loss:
        return f"<{points[0][0]:g}"
    for (m0, l0), (m1, l1) in itertools.pairwise(points):
        if l1 <= selection_loss < l0:
            share = (l0 - selection_loss) / (l0 - l1)
            return float(math.exp(math.log(m0) + share * (math.log(m1) - math.log(m0))))
    return f">{points[-1][0]:g}"

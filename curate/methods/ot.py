"""Entropic optimal transport between targets and candidates, and its gradient (docs/methods.md §5.4-§5.5).

`sinkhorn(x, y, ...)` solves `min <C,P> - eps·H(P)` over couplings of the target marginal a (x: M points) and
the candidate marginal b (y: N points), C_ij = ||x_i - y_j||², in the log domain with over-relaxation
(`momentum` ω: `f <- (1-ω)·f + ω·f_new`). Each half-step is one `kernels.sinkhorn.sinkhorn_update` (the cost in
tiles, never stored: memory O((M + N)·d)). The error is the L1 violation of the candidate marginal,
Σ_j |(Pᵀ1)_j - b_j|, computed for free from the next g-update (P's column sums are b_j·exp((g_j - g_new_j)/eps)).

`calibrated_gradient(g)` turns the candidate potentials into the derivative of the OT cost with respect to each
candidate's mass when total mass is held fixed: g_j - Σ_{l≠j} g_l / (N-1). GOT-D keeps the most negative.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from curate.kernels.sinkhorn import DEFAULT_BLOCK, sinkhorn_update

log = logging.getLogger("curate")


@dataclass
class SinkhornResult:
    """Dual potentials f (targets) and g (candidates), the regularised cost <a,f> + <b,g>, and how it went."""

    f: np.ndarray
    g: np.ndarray
    cost: float
    iterations: int
    converged: bool
    error: float  # L1 violation of the candidate marginal at the returned potentials
    epsilon: float  # the absolute epsilon used
    mean_cost: float  # mean of C over all pairs (what a relative epsilon multiplies)
    seconds: float

    def summary(self) -> dict[str, float | int | bool]:
        return {"ot_cost": self.cost, "iterations": self.iterations, "converged": self.converged,
                "marginal_error": self.error, "epsilon": self.epsilon, "mean_cost": self.mean_cost,
                "seconds": round(self.seconds, 3)}


def mean_squared_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """mean_ij ||x_i - y_j||² in O((M + N)·d): mean|x|² + mean|y|² - 2·mean(x)·mean(y)."""
    x64, y64 = x.double(), y.double()
    return float((x64 * x64).sum(1).mean() + (y64 * y64).sum(1).mean() - 2 * x64.mean(0) @ y64.mean(0))


def _log_marginal(weights: np.ndarray | None, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if weights is None:
        return torch.full((n,), -math.log(n), dtype=dtype, device=device)
    w = np.asarray(weights, np.float64)
    if w.shape != (n,) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"a marginal must be {n} non-negative weights summing to 1")
    return torch.as_tensor(np.log(w), dtype=dtype, device=device)


def sinkhorn(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, a: np.ndarray | None = None,
             b: np.ndarray | None = None, epsilon: float = 0.1, relative: bool = False, momentum: float = 1.3,
             tolerance: float = 0.1, max_iter: int = 2000, block: int = DEFAULT_BLOCK, device: str = "cpu",
             dtype: torch.dtype = torch.float32,
             on_iteration: Callable[[int, float], None] | None = None) -> SinkhornResult:
    """Log-domain Sinkhorn between x (targets, marginal a, uniform by default) and y (candidates, b).

    `relative`: epsilon is `epsilon · mean(C)` instead of absolute. Stops when the marginal error is below
    `tolerance` or after `max_iter` iterations (`converged` says which); `on_iteration(i, error)` sees each one.
    """
    if not 0 < momentum < 2:
        raise ValueError(f"momentum must be in (0, 2), got {momentum}")
    started = time.perf_counter()
    dev = torch.device(device)
    xt, yt = (v.to(dev, dtype) if isinstance(v, torch.Tensor) else  # a read-only array (np.load) is copied
              torch.from_numpy(np.require(v, requirements=["W"])).to(dev, dtype) for v in (x, y))
    m, n = xt.shape[0], yt.shape[0]
    if m == 0 or n == 0:
        raise ValueError(f"optimal transport needs points on both sides, got {m} targets and {n} candidates")
    mean_cost = mean_squared_distance(xt, yt)
    eps = epsilon * mean_cost if relative else epsilon
    if not eps > 0:
        raise ValueError(f"epsilon must be > 0, got {eps} (mean cost {mean_cost:.4g})")
    log_a = _log_marginal(a, m, dtype, dev)
    log_b = _log_marginal(b, n, dtype, dev)
    mass_b = log_b.exp()  # the error of every iteration weighs by it
    f = torch.zeros(m, dtype=dtype, device=dev)
    g = torch.zeros(n, dtype=dtype, device=dev)
    error, converged, iterations = math.inf, False, 0
    for iterations in range(1, max_iter + 1):
        g_new = sinkhorn_update(yt, xt, f, log_b, eps, block)
        if iterations > 1:
            ratio = torch.exp(((g - g_new) / eps).clamp(max=60.0))
            error = float((mass_b * (ratio - 1).abs()).sum())
            if on_iteration is not None:
                on_iteration(iterations - 1, error)
            if error < tolerance:
                converged = True
                iterations -= 1  # the potentials returned are those of the previous iteration
                break
        g = g_new if momentum == 1 else (1 - momentum) * g + momentum * g_new
        f_new = sinkhorn_update(xt, yt, g, log_a, eps, block)
        f = f_new if momentum == 1 else (1 - momentum) * f + momentum * f_new
    cost = float((log_a.exp() * f).sum() + (mass_b * g).sum())
    result = SinkhornResult(f.double().cpu().numpy(), g.double().cpu().numpy(), cost, iterations, converged,
                            error, float(eps), mean_cost, time.perf_counter() - started)
    if not converged:
        log.warning("sinkhorn did not converge: marginal error %.3g > tolerance %.3g after %d iterations "
                    "(epsilon %.4g, mean cost %.4g); raise max_iter or epsilon", error, tolerance, iterations,
                    eps, mean_cost)
    return result


def calibrated_gradient(g: np.ndarray) -> np.ndarray:
    """d OT / d b_j with total mass fixed: g_j minus the mean of the other potentials (ranks as g does)."""
    g = np.asarray(g, np.float64)
    n = len(g)
    if n < 2:
        return g - g
    return g - (g.sum() - g) / (n - 1)

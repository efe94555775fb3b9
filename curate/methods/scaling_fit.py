"""Fitting the scaling law's parameters to your own small runs (docs/methods.md §8.2).

For each quality bucket, train small models for a few epoch counts on that bucket alone and record the error
(1 - accuracy, or a held-out loss) against the samples (or tokens) seen. `fit_parameters` grid-searches a shared
scale `a` and per bucket the utility exponent `b` and half-life `τ` that minimise the squared error of
`effective_utility` against those measurements, as the authors' `grid_search.py` does: b in [-0.5, -0.005] (100
points), τ in [1, 10] (100 points), a on a log grid. The law is evaluated for the whole (b, τ) grid at once per
measurement, so a fit is a few hundred numpy operations, not 10^7 Python calls.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.methods.scaling import Z, law

B_GRID = np.linspace(-0.5, -0.005, 100)
TAU_GRID = np.linspace(1.0, 10.0, 100)


@dataclass(frozen=True)
class Measurement:
    bucket: int  # 0 = the best bucket
    samples: float  # samples (or tokens) seen in training
    pool: float  # the bucket's size in the same unit (samples / pool = passes)
    error: float


@dataclass
class Fit:
    a: float
    b: list[float]  # per bucket, best first
    tau: list[float]
    sse: float  # summed squared error of the fitted law over all measurements
    z: float = Z


def utility_grid(n: float, pool: float, b: np.ndarray, tau: np.ndarray, a: float, d: float = 0.0,
                 z: float = Z) -> np.ndarray:
    """`effective_utility(n, pool, b_i, τ_j, a, d)` for every pair of the grids b (B,) and τ (T,): shape (B, T)."""
    k = np.arange(math.floor(n / pool) + 1)
    exponents = b[:, None, None] * 0.5 ** (k[None, None, :] / tau[None, :, None])  # (B, T, passes + 1)
    return law(n, pool, exponents, a, d, z=z)


def fit_parameters(measurements: list[Measurement], a_grid: np.ndarray | None = None, d: float = 0.0,
                   b_grid: np.ndarray = B_GRID, tau_grid: np.ndarray = TAU_GRID) -> Fit:
    """The shared a and per-bucket (b, τ) of least squared error; every bucket needs at least one measurement."""
    if not measurements:
        raise ValueError("no measurements to fit")
    buckets = sorted({m.bucket for m in measurements})
    if buckets != list(range(len(buckets))):
        raise ValueError(f"buckets must be numbered 0..{len(buckets) - 1} (0 = the best), got {buckets}")
    a_grid = np.geomspace(1e-4, 1.0, 41) if a_grid is None else np.asarray(a_grid, np.float64)
    best: Fit | None = None
    for a in a_grid:
        b_fit, tau_fit, total = [], [], 0.0
        for bucket in buckets:
            sse = sum((utility_grid(m.samples, m.pool, b_grid, tau_grid, a, d) - m.error) ** 2
                      for m in measurements if m.bucket == bucket)
            i, j = np.unravel_index(int(np.argmin(sse)), sse.shape)
            b_fit.append(float(b_grid[i]))
            tau_fit.append(float(tau_grid[j]))
            total += float(sse[i, j])
        if best is None or total < best.sse:
            best = Fit(float(a), b_fit, tau_fit, total)
    return best


def read_measurements(path: Path) -> list[Measurement]:
    """Measurements from a CSV (header: bucket, samples, pool, error) or a JSON list of such objects."""
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file of measurements (CSV or JSON: bucket, samples, pool, error)")
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text) if path.suffix == ".json" else list(csv.DictReader(text.splitlines()))
    try:
        return [Measurement(int(r["bucket"]), float(r["samples"]), float(r["pool"]), float(r["error"]))
                for r in rows]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: every measurement needs bucket, samples, pool and error ({error})") from None

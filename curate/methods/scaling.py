"""Compute-aware selection ratios: the scaling law for data filtering of Goyal et al. (docs/methods.md §8).

Data is split into quality buckets (quantiles of a score, best first), bucket i with a utility exponent b_i < 0
(more negative: the loss falls faster) and a repetition half-life τ_i (a sample's utility halves every τ_i
passes). `effective_utility` is the error after N samples (or tokens) from one pool of P (§8.1, as the authors'
`objective.py`); `pool_utility` mixes the top m buckets as their `func_effective_utility_aggregation` does
(half-lives scaled by m, exponents averaged per pass); `recommend` picks the m with the lowest predicted error for
a budget N, and so the fraction of the data to keep. With no fitted parameters the defaults are ours, and say so:
b_i = b_1·(1 - 0.1·(i-1)), τ_i = 4 (§8.3), with the rule of thumb they imply, m ≈ ceil(N / (τ·P_b)).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger("curate")
Z = 100_000.0  # the authors' normaliser of samples seen
BUCKETS_PER_Z = 128.0  # their buckets hold 12.8M samples: Z is 1/128 of a bucket
HEURISTIC_B1, HEURISTIC_TAU = -0.1, 4.0  # our defaults when nothing is fitted (§8.3), labelled as such


def effective_utility(n: float, pool: float, b: float | np.ndarray, tau: float | np.ndarray = math.inf,
                      a: float = 1.0, d: float = 0.0, d_additive: bool = False, z: float = Z) -> float:
    """Predicted error after `n` samples drawn in passes over a pool of `pool` samples (§8.1).

    `b` and `tau` may be per-pass arrays (b_k already decayed) via `pool_utility`; scalars decay as b·0.5^(k/τ).
    The authors multiply the whole (n_0^b + d) term; `d_additive` gives d + n_0^b·Π(...) instead.
    """
    if n <= 0 or pool <= 0:
        raise ValueError(f"samples seen and pool size must be > 0, got {n} and {pool}")
    return float(law(n, pool, _pass_exponents(b, tau, math.floor(n / pool)), a, d, d_additive, z))


def law(n: float, pool: float, exponents: np.ndarray, a: float = 1.0, d: float = 0.0, d_additive: bool = False,
        z: float = Z) -> np.ndarray:
    """The law of §8.1 given every pass's exponent, `exponents[..., k]` for k = 0..floor(n / pool); leading axes
    broadcast, so a whole grid of parameters is one call (`curate.methods.scaling_fit`). Pass k multiplies the error by
    (n_k / n'_k)^b_k; a and z cancel in that ratio."""
    k = np.arange(1, math.floor(n / pool) + 1)
    log_ratio = np.log(np.minimum(pool * (k + 1), n) / (pool * k))
    first = (a * min(pool, n) / z) ** exponents[..., 0]
    product = np.exp((exponents[..., 1:] * log_ratio).sum(axis=-1))
    return d + first * product if d_additive else (first + d) * product


def _pass_exponents(b: float | np.ndarray, tau: float | np.ndarray, passes: int) -> np.ndarray:
    if np.ndim(b):  # already one exponent per pass
        return np.asarray(b, np.float64)
    k = np.arange(passes + 1)
    return b * 0.5 ** (k / tau) if math.isfinite(tau) else np.full(passes + 1, float(b))


def pool_utility(n: float, bucket_size: float, b: np.ndarray, tau: np.ndarray, m: int, a: float = 1.0,
                 d: float = 0.0, d_additive: bool = False, z: float = Z) -> float:
    """Predicted error of training on the best m buckets mixed (pool m·P_b): per pass k the exponent is the mean of
    b_i·0.5^(k / (m·τ_i)) over those buckets (the authors scale every half-life by m)."""
    order = np.argsort(np.asarray(b, np.float64), kind="stable")[:m]
    best_b, best_tau = np.asarray(b, np.float64)[order], np.asarray(tau, np.float64)[order] * m
    pool = m * bucket_size
    passes = math.floor(n / pool)
    k = np.arange(passes + 1)[:, None]
    exponents = (best_b[None, :] * 0.5 ** (k / best_tau[None, :])).mean(axis=1)
    return effective_utility(n, pool, exponents, a=a, d=d, d_additive=d_additive, z=z)


def heuristic_parameters(buckets: int, b1: float = HEURISTIC_B1, tau: float = HEURISTIC_TAU) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """Our defaults (§8.3): utility falls 10% per bucket from b_1; one half-life for all."""
    i = np.arange(buckets)
    return b1 * (1 - 0.1 * i), np.full(buckets, tau)


class ComputeParams(BaseModel):
    """What a compute-aware budget needs: the training budget (`tokens`, or `epochs` over the candidates) and the
    law's parameters per quality bucket (default: our heuristic ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # as stage parameters (stages import this module)

    tokens: float | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    buckets: int = Field(10, ge=1, le=100)
    utility: list[float] | None = None  # b_i per bucket, best bucket first (fitted); default: the heuristic
    half_life: list[float] | None = None  # τ_i per bucket (fitted); default: 4 passes
    a: float = Field(1.0, gt=0)
    d: float = Field(0.0, ge=0)
    # the normaliser of samples seen; default: 1/128 of a bucket, the authors' ratio (1e5 samples to buckets of
    # 12.8M), so that the law sees a budget relative to the data however tokens are counted
    z: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_budget(self) -> ComputeParams:
        if (self.tokens is None) == (self.epochs is None):
            raise ValueError("give exactly one of compute.tokens and compute.epochs")
        for key in ("utility", "half_life"):
            value = getattr(self, key)
            if value is not None and len(value) != self.buckets:
                raise ValueError(f"compute.{key}: {len(value)} values for {self.buckets} buckets")
        if self.utility is not None and any(b >= 0 for b in self.utility):
            raise ValueError("compute.utility: exponents must be < 0 (more negative: higher quality)")
        return self


def needs_compute(key: str) -> Any:
    """A pydantic `after` validator for stage parameters: `<key>: auto` needs a `compute:` block."""

    def check(params: Any) -> Any:
        if getattr(params, key) == "auto" and params.compute is None:
            raise ValueError(f"{key}: auto needs `compute: {{tokens: N}}` (or `{{epochs: E}}`): the training budget "
                             "the compute-aware recommendation is for")
        return params

    return check


@dataclass
class Recommendation:
    """The law's choice for one budget: keep the best `m` of `buckets` quality buckets."""

    m: int
    buckets: int
    fraction: float  # rows kept / rows scored
    budget_tokens: float
    bucket_tokens: list[float]
    curve: list[dict[str, float]]  # per m: rows, tokens, passes, predicted error
    rule_of_thumb_m: int
    parameters: Literal["fitted", "heuristic"]
    b: list[float] = field(default_factory=list)
    tau: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"m": self.m, "buckets": self.buckets, "fraction": round(self.fraction, 6),
                "budget_tokens": self.budget_tokens, "rule_of_thumb_m": self.rule_of_thumb_m,
                "parameters": self.parameters}


def quality_buckets(scores: np.ndarray, buckets: int, higher_is_better: bool = True) -> np.ndarray:
    """Bucket of each row (0 = best), by quantile of the score; rows without a score (NaN) get -1."""
    scores = np.asarray(scores, np.float64)
    out = np.full(len(scores), -1, np.int64)
    live = np.flatnonzero(np.isfinite(scores))
    keys = -scores[live] if higher_is_better else scores[live]
    order = live[np.lexsort((live, keys))]  # best first, ties by position
    out[order] = np.arange(len(order)) * buckets // max(len(order), 1)
    return out


def recommend(scores: np.ndarray, tokens: np.ndarray, compute: ComputeParams,
              higher_is_better: bool = True) -> Recommendation:
    """How many quality buckets to keep for the compute budget (§8.2-§8.3), from per-row scores and token counts."""
    bucket = quality_buckets(scores, compute.buckets, higher_is_better)
    tokens = np.asarray(tokens, np.float64)
    bucket_tokens = np.bincount(bucket[bucket >= 0], weights=tokens[bucket >= 0], minlength=compute.buckets)
    bucket_rows = np.bincount(bucket[bucket >= 0], minlength=compute.buckets)
    scored_tokens = float(bucket_tokens.sum())
    if scored_tokens <= 0:
        raise ValueError("no scored row has any tokens: nothing to budget")
    budget = compute.tokens if compute.tokens is not None else compute.epochs * scored_tokens
    fitted = compute.utility is not None
    default_b, default_tau = heuristic_parameters(compute.buckets)
    b = np.array(compute.utility) if fitted else default_b
    tau = np.array(compute.half_life) if compute.half_life is not None else default_tau
    size = scored_tokens / compute.buckets  # P_b: quantile buckets hold equal rows, about equal tokens
    curve = []
    for m in range(1, compute.buckets + 1):
        y = pool_utility(budget, size, b, tau, m, a=compute.a, d=compute.d, z=compute.z or size / BUCKETS_PER_Z)
        curve.append({"m": m, "rows": int(bucket_rows[:m].sum()), "tokens": float(bucket_tokens[:m].sum()),
                      "passes": budget / (m * size), "predicted_error": y})
    best = min(curve, key=lambda c: (c["predicted_error"], c["m"]))["m"]
    rule = int(min(compute.buckets, max(1, math.ceil(budget / (float(np.mean(tau)) * size)))))
    live = int((bucket >= 0).sum())
    return Recommendation(m=best, buckets=compute.buckets, fraction=curve[best - 1]["rows"] / max(live, 1),
                          budget_tokens=float(budget), bucket_tokens=bucket_tokens.tolist(), curve=curve,
                          rule_of_thumb_m=rule, parameters="fitted" if fitted else "heuristic",
                          b=b.tolist(), tau=tau.tolist())


def auto_budget(scores: np.ndarray, tokens: np.ndarray, compute: ComputeParams | None, higher_is_better: bool,
                what: str) -> tuple[int, dict[str, Any]]:
    """Rows to keep for `budget: auto` (`fraction: auto`, `tau: auto`): those of the recommended best buckets, with
    the recommendation for the step's manifest."""
    if compute is None:
        raise ValueError(f"{what}: an `auto` budget needs `compute: {{tokens: N}}` or `compute: {{epochs: E}}`")
    rec = recommend(scores, tokens, compute, higher_is_better)
    label = "heuristic defaults (ours, docs/methods.md §8.3)" if rec.parameters == "heuristic" else "fitted parameters"
    log.info("%s: compute-aware budget: keep the best %d of %d quality buckets (%.1f%% of the scored rows) for %.4g "
             "tokens, by the scaling law with %s", what, rec.m, rec.buckets, 100 * rec.fraction, rec.budget_tokens,
             label)
    return int(rec.curve[rec.m - 1]["rows"]), rec.summary() | {"curve": rec.curve}


def auto_budget_of_rows(scores: np.ndarray, rows: Any, positions: np.ndarray, compute: ComputeParams | None,
                        higher_is_better: bool, what: str) -> tuple[int, dict[str, Any]]:
    """`auto_budget` for the rows at `positions` of a decision's input (`Rows`), their tokens counted as the
    white-space words of `text` (what `curate budget` counts too)."""
    from curate.models.token_count import word_counts

    words = word_counts(rows.take(positions, ["text"]).column("text"))
    return auto_budget(scores, words, compute, higher_is_better, what)

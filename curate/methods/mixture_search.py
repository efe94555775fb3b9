"""Mixture search: RegMix's proxy sampler, its search of the simplex, and CLIMB's next round (docs/methods.md §17).

Train cheap proxies on sampled mixture weights, fit a regressor weights → objective
(`curate.methods.mixture_regression`), score many random mixtures with it and keep the best region.

- `sample_weights(shares, n)`: the proxies' mixtures, RegMix's `synthesize_mixture.py`: bounds u_i = min(E·p_i, 1)
  on the untempered natural shares p, tempered q ∝ p^τ, a Dirichlet(c·q) draw with the strength c uniform among
  15 log-spaced values in [0.1, 5] (small c: near a corner, large c: near q), rejection of any w_i > u_i, weights
  below m set to 0, then rounded to multiples of m; n·100 draws, deduplicated, n of them without replacement.
- `search(regressor, shares)`: 100,000 candidates w ~ Dirichlet(p) (strength 1, untempered; the sampling
  distribution of the search is not the proxies'), filtered by the same bounds and m (trees predict flat outside
  the sampled region), scored, and the mean of the k = 128 best (RegMix) or the single best (CLIMB).
- `next_round(regressor, shares, n_next)`: CLIMB's next round, n_next mixtures uniformly without replacement from
  the top max(n_next², 128) candidates.
- `natural_shares`, `weight_bounds`, `round_to_grid`, `epochs`, `part_tokens`: the shares, the bounds, the
  rounding, and what a mixture asks of each part at a token budget.

Ours: rounding apportions whole multiples of m (largest remainders), so Σw = 1 exactly and every weight stays a
multiple of m (RegMix's plain rounding can leave Σw off by P·m/2); a rounded proxy mixture is checked against the
bounds again; `direction` makes the sense of the objective explicit (RegMix minimises a loss, CLIMB maximises an
accuracy). Candidates are drawn and scored in chunks, so P in the thousands does not hold 10^5·P floats at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from curate.methods.mixture_regression import MixtureRegressor

Direction = Literal["min", "max"]
Final = Literal["mean_top_k", "best"]

STRENGTHS = np.geomspace(0.1, 5.0, 15)  # RegMix: np.logspace(log10(0.1), log10(5), 15)
SAMPLE_MULTIPLIER = 100  # RegMix draws n·100 mixtures for n proxies
DEDUPE_L1 = 1e-5  # RegMix: mixtures closer than this in L1 are the same
CHUNK_VALUES = 1 << 21  # candidates are drawn and scored this many weights (rows x parts) at a time
MIN_POOL = 128  # CLIMB: the next round is drawn from the top max(n², 128)


def natural_shares(token_counts: np.ndarray | list[float]) -> np.ndarray:
    """p_i = t_i / Σt: each part's share of all tokens (every part must have tokens)."""
    t = np.asarray(token_counts, dtype=np.float64).ravel()
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"every part needs a positive, finite token count, got {t.tolist()}")
    return t / t.sum()


def weight_bounds(shares: np.ndarray | list[float], max_epochs: float = 15.0) -> np.ndarray:
    """u_i = min(E·p_i, 1): the largest weight that part i can have without being repeated more than E times
    at the target scale (on the untempered shares)."""
    return np.minimum(max_epochs * natural_shares(shares), 1.0)


def round_to_grid(weights: np.ndarray, min_weight: float = 2e-4) -> np.ndarray:
    """Weights (one mixture or rows of them) with w_i < m set to 0, renormalised, and rounded to multiples of m
    that sum to exactly 1: K = round(1/m) units apportioned by largest remainder (ties to the lower index)."""
    w = np.asarray(weights, dtype=np.float64)
    rows = np.atleast_2d(w)
    rows = np.where(rows < min_weight, 0.0, rows)
    total = rows.sum(axis=1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError(f"a mixture has no weight of at least min_weight = {min_weight}")
    units = round(1.0 / min_weight)
    scaled = rows / total * units
    base = np.floor(scaled + 1e-9)  # a weight of exactly m must give one unit, not 0.9999999 → 0
    short = units - base.sum(axis=1)  # 0 .. P-1 units left to hand out per row
    order = np.argsort(-(scaled - base), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(rows.shape[1]), rows.shape), axis=1)
    rounded = (base + (rank < short[:, None])) / units
    return rounded.reshape(w.shape)


def dedupe(weights: np.ndarray, tol: float = DEDUPE_L1) -> np.ndarray:
    """RegMix's `sort_and_deduplicate`: rows sorted by `np.lexsort` (last column first); a row within L1 <= tol of
    the last row kept is dropped."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0:
        return w.reshape(0, w.shape[-1] if w.ndim == 2 else 0)
    w = np.unique(w, axis=0)  # exact repeats (the usual case on the grid) never change what is kept
    w = w[np.lexsort(w.T)]
    gaps = np.abs(np.diff(w, axis=0)).sum(axis=1)
    if np.all(gaps > tol):
        return w
    kept = [0]
    for i in range(1, len(w)):
        if np.abs(w[i] - w[kept[-1]]).sum() > tol:
            kept.append(i)
    return w[kept]


def draw_proxy_weights(shares: np.ndarray | list[float], draws: int, rng: np.random.Generator,
                       max_epochs: float = 15.0, temperature: float = 0.5, strengths: np.ndarray = STRENGTHS,
                       min_weight: float = 2e-4) -> np.ndarray:
    """Steps 1-5 of RegMix's sampler for `draws` draws: the accepted, rounded mixtures (duplicates kept)."""
    p = natural_shares(shares)
    bounds = weight_bounds(p, max_epochs)
    q = p**temperature
    q /= q.sum()
    strengths = np.asarray(strengths, dtype=np.float64)
    which = rng.integers(len(strengths), size=draws)  # the strength of each draw, uniform among the values
    w = np.empty((draws, len(p)))
    for k, c in enumerate(strengths):  # one Dirichlet call per strength: numpy's sampler handles tiny α
        rows = which == k
        w[rows] = rng.dirichlet(c * q, size=int(rows.sum()))
    w = round_to_grid(w[np.all(w <= bounds, axis=1)], min_weight)
    return w[np.all(w <= bounds + 1e-12, axis=1)]  # ours: rounding can lift a weight just past its bound


def sample_weights(shares: np.ndarray | list[float], n: int, seed: int = 42, max_epochs: float = 15.0,
                   temperature: float = 0.5, strengths: np.ndarray = STRENGTHS,
                   min_weight: float = 2e-4) -> np.ndarray:
    """n distinct proxy mixtures (n x P), RegMix's sampler; raises when fewer than n distinct ones come out."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    draws = n * SAMPLE_MULTIPLIER
    accepted = draw_proxy_weights(shares, draws, rng, max_epochs, temperature, strengths, min_weight)
    unique = dedupe(accepted)
    if len(unique) < n:
        raise ValueError(
            f"only {len(unique)} distinct mixtures ({len(accepted)} accepted of {draws} draws) for n = {n} proxies "
            f"over {len(np.ravel(shares))} parts: ask for fewer proxies, a smaller min_weight ({min_weight}) or a "
            f"larger max_epochs ({max_epochs})")
    return unique[rng.choice(len(unique), size=n, replace=False)]


def draw_candidates(shares: np.ndarray | list[float], n: int, rng: np.random.Generator,
                    max_epochs: float = 15.0, min_weight: float = 2e-4) -> np.ndarray:
    """n draws w ~ Dirichlet(p) (strength 1, untempered) with w_i < m set to 0 and renormalised, keeping those
    within the bounds u_i: the search's candidates (fewer than n come back when the bounds reject some)."""
    p = natural_shares(shares)
    w = rng.dirichlet(p, size=n)
    w = np.where(w < min_weight, 0.0, w)
    w /= w.sum(axis=1, keepdims=True)  # its largest weight is >= 1/P, so the sum is not 0 for m <= 1/P
    return w[np.all(w <= weight_bounds(p, max_epochs), axis=1)]


def _sign(direction: Direction) -> float:
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be min or max, got {direction!r}")
    return 1.0 if direction == "min" else -1.0


def best_candidates(regressor: MixtureRegressor, shares: np.ndarray | list[float], keep: int,
                    candidates: int = 100_000, rng: np.random.Generator | None = None, max_epochs: float = 15.0,
                    min_weight: float = 2e-4, direction: Direction = "min",
                    distinct: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """The `keep` best of `candidates` draws by predicted objective, best first (ties: the earlier draw), their
    predictions, and how many draws passed the bounds. `distinct`: candidates rounded to the grid of min_weight
    and each mixture kept once (Dirichlet(p) with small p puts many draws on the same corner)."""
    sign = _sign(direction)
    rng = np.random.default_rng(42) if rng is None else rng
    P = len(np.ravel(shares))
    top_w, top_y, accepted = np.empty((0, P)), np.empty(0), 0
    step = max(1, CHUNK_VALUES // P)
    for start in range(0, candidates, step):
        w = draw_candidates(shares, min(step, candidates - start), rng, max_epochs, min_weight)
        accepted += len(w)
        if len(w) == 0:
            continue
        if distinct:
            w = round_to_grid(w, min_weight)
        top_w = np.vstack([top_w, w])
        top_y = np.concatenate([top_y, regressor.predict(w)])
        order = np.argsort(sign * top_y, kind="stable")  # stable: earlier draws win ties
        if distinct:  # the first (best) copy of each mixture; exact equality, the weights are on the grid
            first = np.unique(top_w[order], axis=0, return_index=True)[1]
            order = order[np.sort(first)]
        top_w, top_y = top_w[order[:keep]], top_y[order[:keep]]
    if accepted == 0:
        raise ValueError(f"none of {candidates} candidate mixtures is within the bounds (max_epochs = {max_epochs})")
    return top_w, top_y, accepted


@dataclass
class SearchResult:
    weights: np.ndarray  # (P,) the final mixture, on the grid of min_weight
    predicted: float  # the regressor's prediction for `weights`
    candidates: np.ndarray  # (k, P) the best candidates, best first
    predictions: np.ndarray  # (k,) their predictions
    accepted: int  # candidates within the bounds, of all drawn
    final: Final
    top_k: int
    direction: Direction


def search(regressor: MixtureRegressor, shares: np.ndarray | list[float], candidates: int = 100_000,
           top_k: int = 128, final: Final = "mean_top_k", seed: int = 42, max_epochs: float = 15.0,
           min_weight: float = 2e-4, direction: Direction = "min", keep: int = 1000) -> SearchResult:
    """The final mixture: the mean of the top_k best candidates (RegMix) or the best one (CLIMB), renormalised
    and rounded to multiples of min_weight. `keep` best candidates (at least top_k) come back for the report."""
    if final not in ("mean_top_k", "best"):
        raise ValueError(f"final must be mean_top_k or best, got {final!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    rng = np.random.default_rng(seed)
    top_w, top_y, accepted = best_candidates(regressor, shares, max(keep, top_k), candidates, rng, max_epochs,
                                             min_weight, direction)
    chosen = top_w[:top_k].mean(axis=0) if final == "mean_top_k" else top_w[0]
    weights = round_to_grid(chosen, min_weight)
    predicted = float(regressor.predict(weights[None, :])[0])
    return SearchResult(weights, predicted, top_w[:keep], top_y[:keep], accepted, final, top_k, direction)


def next_round(regressor: MixtureRegressor, shares: np.ndarray | list[float], n_next: int, seed: int = 42,
               candidates: int = 100_000, max_epochs: float = 15.0, min_weight: float = 2e-4,
               direction: Direction = "min", exclude: np.ndarray | None = None) -> np.ndarray:
    """CLIMB's next round (n_next x P): n_next mixtures picked uniformly without replacement from the top
    max(n_next², 128) predicted candidates. Ours: the candidates are rounded to the grid of min_weight like the
    first round's and the pool holds distinct mixtures, none of them in `exclude` (the proxies already run)."""
    if n_next < 1:
        raise ValueError(f"n_next must be at least 1, got {n_next}")
    rng = np.random.default_rng(seed)
    size = max(n_next**2, MIN_POOL)
    done = np.empty((0, len(np.ravel(shares)))) if exclude is None else round_to_grid(np.atleast_2d(exclude),
                                                                                        min_weight)
    pool, _, _ = best_candidates(regressor, shares, size + len(done), candidates, rng, max_epochs, min_weight,
                                 direction, distinct=True)
    if len(done):  # exact comparison: both sides are on the grid
        seen = {row.tobytes() for row in done}
        pool = pool[[row.tobytes() not in seen for row in pool]]
    pool = pool[:size]
    if len(pool) < n_next:
        raise ValueError(f"only {len(pool)} distinct new mixtures among {candidates} candidates for "
                         f"n_next = {n_next}: draw more candidates or lower min_weight ({min_weight})")
    return pool[rng.choice(len(pool), size=n_next, replace=False)]


def epochs(weights: np.ndarray, token_counts: np.ndarray | list[float], total_tokens: float) -> np.ndarray:
    """Passes over each part that a mixture asks for at a budget of T tokens: w_i·T / t_i."""
    t = np.asarray(token_counts, dtype=np.float64)
    return np.asarray(weights, dtype=np.float64) * total_tokens / t


def part_tokens(weights: np.ndarray, token_counts: np.ndarray | list[float], total_tokens: int,
                max_epochs: float = 15.0) -> np.ndarray:
    """Tokens to take from each part (integers summing to T, by largest remainder); raises when a part would be
    repeated more than max_epochs times (w_i·T / t_i > E), naming the parts."""
    w = np.asarray(weights, dtype=np.float64)
    natural_shares(token_counts)  # every part must have tokens
    t = np.asarray(token_counts, dtype=np.float64).ravel()
    if w.shape != t.shape:
        raise ValueError(f"{w.size} weights for {t.size} parts")
    passes = epochs(w, t, total_tokens)
    over = np.flatnonzero(passes > max_epochs + 1e-9)
    if len(over):
        listed = ", ".join(f"part {i}: {passes[i]:.3g}" for i in over)
        raise ValueError(f"the mixture repeats parts more than max_epochs = {max_epochs} times at {total_tokens} "
                         f"tokens ({listed})")
    scaled = w / w.sum() * total_tokens
    base = np.floor(scaled)
    order = np.argsort(-(scaled - base), kind="stable")
    base[order[: round(float(total_tokens - base.sum()))]] += 1
    return base.astype(np.int64)

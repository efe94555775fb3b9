"""Selection primitives shared by the selection methods (docs/methods.md §0.3, §4.4, §4.5).

- `top_k(scores, k)`: the k largest scores, ties broken by lower index, so runs repeat exactly.
- `gumbel_top_k(log_w, k, rng)`: k draws without replacement with probability ∝ exp(log_w)
  (Gumbel-top-k: the top k of `log_w + G`, G standard Gumbel = sequential sampling without replacement).
- `segmented_top_k(keys, groups, quotas)` / `segmented_gumbel_top_k(...)`: the same inside every group
  (cluster) at once, with one sort by (group, key) and no loop over groups.
- `fraction_to_k(fraction, n)`: `floor(fraction * n)`, as the reference repos do; `budget_to_k` for a `Budget`
  (a count, or a fraction of the rows).
- `allocate_quotas(sizes, budget, mode, redistribute)`: per-cluster quotas, `equal` (kMQ's code:
  `min(floor(B/K), |C_j|)`) or `proportional` (`floor(B·|C_j|/N)`); `redistribute` hands the shortfall
  to clusters with room left (our improvement; off in the repo).
- Iterative refinement (§4.5) as pure functions: `cluster_weights` (softmax over per-cluster mean Δ),
  `draw_size` (`B/R`, or the repo's `B/(R·K)`), `next_round` (draw labels from Categorical(w), take
  `min(m_j, available)` not-yet-selected rows per cluster uniformly at random).

Working in log space (keys = log-weights + noise) means weights are never exponentiated, so large
qualities cannot overflow and no per-cluster max has to be subtracted for sampling.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator

QuotaMode = Literal["equal", "proportional"]


def _float_keys(scores: np.ndarray) -> np.ndarray:
    keys = np.asarray(scores, dtype=np.float64).ravel()
    return np.where(np.isnan(keys), -np.inf, keys)  # NaN ranks with -inf: last, never ahead of a number


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores in descending order; equal scores in increasing index order.

    NaN ranks like -inf. Uses a partition (O(n)) and sorts only the k winners.
    """
    keys = _float_keys(scores)
    n = len(keys)
    k = max(0, min(int(k), n))
    if k == 0:
        return np.zeros(0, np.int64)
    if k < n:
        threshold = np.partition(keys, n - k)[n - k]  # the k-th largest value
        above = np.flatnonzero(keys > threshold)
        tied = np.flatnonzero(keys == threshold)[: k - len(above)]  # lowest indices among the ties
        chosen = np.concatenate([above, tied])
    else:
        chosen = np.arange(n)
    order = np.lexsort((chosen, -keys[chosen]))  # by key descending, then index ascending
    return chosen[order].astype(np.int64)


def gumbel_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """n i.i.d. standard Gumbel draws, G = -log(-log U)."""
    return rng.gumbel(0.0, 1.0, n)


def gumbel_top_k(log_w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices drawn without replacement with P ∝ exp(log_w), in draw order.

    Entries with log_w = -inf (weight 0) are never drawn, so fewer than k come back if fewer are possible.
    """
    log_w = np.asarray(log_w, dtype=np.float64).ravel()
    keys = log_w + gumbel_noise(rng, len(log_w))
    possible = int(np.count_nonzero(np.isfinite(keys)))
    return top_k(keys, min(k, possible))


def segmented_top_k(keys: np.ndarray, groups: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Sorted indices of the `quotas[g]` largest keys within every group g (ties: lower index first).

    `groups` are integers in [0, len(quotas)); rows with a negative group or a key of -inf/NaN are
    never chosen. One stable sort by (group, -key); no loop over groups.
    """
    keys = _float_keys(keys)
    groups = np.asarray(groups, dtype=np.int64).ravel()
    quotas = np.asarray(quotas, dtype=np.int64).ravel()
    if len(keys) != len(groups):
        raise ValueError(f"keys ({len(keys)}) and groups ({len(groups)}) differ in length")
    eligible = np.flatnonzero((groups >= 0) & np.isfinite(keys))
    if len(eligible) == 0:
        return np.zeros(0, np.int64)
    g, key = groups[eligible], keys[eligible]
    if g.max() >= len(quotas):
        raise ValueError(f"group {g.max()} has no quota (only {len(quotas)} given)")
    order = np.lexsort((-key, g))  # lexsort is stable: equal keys stay in index order
    g_sorted = g[order]
    starts = np.searchsorted(g_sorted, np.arange(len(quotas)))  # first sorted position of each group
    rank = np.arange(len(order)) - starts[g_sorted]
    return np.sort(eligible[order[rank < quotas[g_sorted]]])


def segmented_gumbel_top_k(log_w: np.ndarray, groups: np.ndarray, quotas: np.ndarray,
                           rng: np.random.Generator | None = None, noise: np.ndarray | None = None) -> np.ndarray:
    """Within every group g, `quotas[g]` rows drawn without replacement with P ∝ exp(log_w); sorted indices.

    Pass `noise` (one Gumbel draw per row, e.g. generated in dataset order) or an `rng` to draw it.
    """
    log_w = np.asarray(log_w, dtype=np.float64).ravel()
    if noise is None:
        if rng is None:
            raise ValueError("give either rng or noise")
        noise = gumbel_noise(rng, len(log_w))
    return segmented_top_k(log_w + noise, groups, quotas)


def _check_budget(value: int | float | str) -> int | float | str:
    if value == "auto":
        return value
    if isinstance(value, bool):
        raise ValueError("a budget is a count (an integer >= 1) or a fraction (a float in (0, 1])")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"a count budget must be >= 1, got {value}")
    if isinstance(value, float) and not 0 < value <= 1:
        raise ValueError(f"a fraction budget must be in (0, 1], got {value}; give a count as an integer")
    return value


# How many rows a selection keeps: a count (int), a fraction of its input rows (float), or `auto` (the compute-aware
# recommendation of curate.methods.scaling, from the stage's `compute:` settings).
Budget = Annotated[int | float | Literal["auto"], AfterValidator(_check_budget)]


def budget_to_k(budget: int | float, n: int) -> int:
    """Rows to keep of n: min(count, n), or floor(fraction · n)."""
    if budget == "auto":
        raise ValueError("an `auto` budget is resolved from the scores (curate.methods.scaling.auto_budget)")
    return min(int(budget), n) if isinstance(budget, int) else fraction_to_k(float(budget), n)


def fraction_to_k(fraction: float, n: int) -> int:
    """Budget k = floor(fraction * n) for 0 <= fraction <= 1.

    The product is rounded to 9 decimals before the floor so float noise does not lose a row
    (0.29 * 100 is 28.999999999999996 in binary floating point; this gives 29).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return math.floor(round(fraction * n, 9))


def _water_fill(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Equal shares capped by cluster size, summing to min(budget, total): the largest level t with
    sum(min(size, t)) <= budget, then +1 for the lowest-index clusters still above t."""
    if budget >= sizes.sum():
        return sizes.copy()
    ordered = np.sort(sizes)
    # filled(t) = sum(min(size, t)) is increasing; evaluate it at every distinct size to bracket t
    below = np.concatenate([[0], np.cumsum(ordered)])[:-1]  # sum of sizes smaller than ordered[i]
    filled = below + ordered * (len(ordered) - np.arange(len(ordered)))
    i = int(np.searchsorted(filled, budget, side="right"))  # t lies between ordered[i-1] and ordered[i]
    rest = len(ordered) - i
    level = (budget - below[i]) // rest
    quotas = np.minimum(sizes, level)
    extra = budget - int(quotas.sum())
    room = np.flatnonzero(sizes > level)[:extra]
    quotas[room] += 1
    return quotas


def allocate_quotas(sizes: np.ndarray, budget: int, mode: QuotaMode = "equal",
                    redistribute: bool = False) -> np.ndarray:
    """Per-cluster quotas for a total budget (docs/methods.md §4.4); never more than a cluster's size.

    - equal: `min(floor(B/K), |C_j|)`; proportional: `floor(B·|C_j|/N)` (N = sum of sizes).
    - redistribute=False (the repo): whatever small clusters or rounding leave unused is lost, so the
      total can fall short of B. redistribute=True: the total is exactly min(B, N); equal mode fills
      level by level (water-filling), proportional mode gives the leftover by largest remainder
      (ties: lower index).
    """
    sizes = np.asarray(sizes, dtype=np.int64).ravel()
    if (sizes < 0).any() or budget < 0:
        raise ValueError("sizes and budget must be non-negative")
    k, total = len(sizes), int(sizes.sum())
    if k == 0 or total == 0:
        return np.zeros(k, np.int64)
    budget = min(int(budget), total)
    if mode == "equal":
        return _water_fill(sizes, budget) if redistribute else np.minimum(sizes, budget // k)
    if mode != "proportional":
        raise ValueError(f"mode must be 'equal' or 'proportional', got {mode!r}")
    exact = budget * sizes  # int64 numerator over `total`: exact arithmetic, no float rounding
    quotas = exact // total
    if redistribute:
        remainder = exact - quotas * total
        short = budget - int(quotas.sum())  # < k, and every cluster it reaches has room left
        order = np.lexsort((np.arange(k), -remainder))
        quotas[order[:short]] += 1
    return quotas


def quotas_from_weights(weights: np.ndarray, sizes: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """§4.5 allocation: draw `draws` cluster labels from Categorical(weights); quota_j = min(m_j, sizes_j)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    sizes = np.asarray(sizes, dtype=np.int64).ravel()
    if len(w) != len(sizes):
        raise ValueError(f"{len(w)} cluster weights for {len(sizes)} clusters")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("cluster weights must be finite, non-negative and not all zero")
    counts = rng.multinomial(int(draws), w / w.sum())
    return np.minimum(counts, sizes)


def cluster_weights(deltas: np.ndarray, clusters: np.ndarray, k: int,
                    empty_cluster_weight: Literal["zero", "mean"] = "zero",
                    prior_count: float | None = None) -> np.ndarray:
    """§4.5 step 4: w = softmax_j(s_j), s_j = mean Δ over the scored members of cluster j (max subtracted).

    Rows with NaN Δ or a negative cluster are unscored. A cluster without scored members gets weight 0
    (`empty_cluster_weight="zero"`) or the score s̄ = mean of the other clusters' s_j ("mean").
    `prior_count` = n0 shrinks noisy means toward s̄: s_j' = (n_j s_j + n0 s̄) / (n_j + n0) (§4.8, off
    by default). If no cluster has a scored member the weights are uniform.
    """
    deltas = np.asarray(deltas, dtype=np.float64).ravel()
    clusters = np.asarray(clusters, dtype=np.int64).ravel()
    scored = np.isfinite(deltas) & (clusters >= 0) & (clusters < k)
    counts = np.bincount(clusters[scored], minlength=k).astype(np.float64)
    sums = np.bincount(clusters[scored], weights=deltas[scored], minlength=k)
    has = counts > 0
    if not has.any():
        return np.full(k, 1.0 / k)
    s = np.zeros(k)
    s[has] = sums[has] / counts[has]
    overall = float(s[has].mean())  # s̄: the mean of the per-cluster means
    if prior_count:
        s[has] = (counts[has] * s[has] + prior_count * overall) / (counts[has] + prior_count)
    live = has if empty_cluster_weight == "zero" else np.ones(k, bool)
    if empty_cluster_weight == "mean":
        s[~has] = overall
    elif empty_cluster_weight != "zero":
        raise ValueError(f"empty_cluster_weight must be 'zero' or 'mean', got {empty_cluster_weight!r}")
    w = np.zeros(k)
    w[live] = np.exp(s[live] - s[live].max())  # max subtracted: exp never overflows
    return w / w.sum()


def draw_size(budget: int, rounds: int, clusters: int, rule: Literal["budget", "repo"] = "budget") -> int:
    """Labels drawn per later round: floor(B/R) ("budget", as §4.5 intends) or floor(B/(R·K)) ("repo":
    the repo's N·p/K/R, which adds K times fewer items per round than round 0 — likely a bug)."""
    if rounds < 1 or clusters < 1:
        raise ValueError("rounds and clusters must be >= 1")
    return budget // rounds if rule == "budget" else budget // (rounds * clusters)


def next_round(clusters: np.ndarray, selected: np.ndarray, weights: np.ndarray, draws: int,
               rng: np.random.Generator) -> np.ndarray:
    """§4.5 step 5: sorted indices of the new picks, min(m_j, |C_j \\ S_t|) per cluster, uniformly at random.

    `selected` is a boolean mask of S_t; `m` ~ Multinomial(draws, weights). Random numbers: the label
    draw first, then one uniform key per row in index order, so results do not depend on sharding.
    """
    clusters = np.asarray(clusters, dtype=np.int64).ravel()
    selected = np.asarray(selected, dtype=bool).ravel()
    k = len(np.asarray(weights).ravel())
    available = np.where(selected, -1, clusters)  # a negative group is never chosen
    sizes = np.bincount(available[available >= 0], minlength=k)
    quotas = quotas_from_weights(weights, sizes, draws, rng)
    keys = rng.random(len(clusters))
    return segmented_top_k(keys, available, quotas)

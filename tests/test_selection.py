"""Selection primitives (docs/methods.md §0.3, §4.4, §4.5): exact tie-breaking, sampling distributions, quotas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from curate.methods.selection import (
    allocate_quotas,
    cluster_weights,
    draw_size,
    fraction_to_k,
    gumbel_top_k,
    next_round,
    quotas_from_weights,
    segmented_gumbel_top_k,
    segmented_top_k,
    top_k,
)

BLOBS = (1000, 500, 200, 100, 50, 50, 50, 50)


def test_top_k_breaks_ties_by_lower_index():
    scores = np.array([1, 3, 3, 2, 3, np.nan, 0])
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 4).tolist() == [1, 2, 4, 3]
    assert top_k(scores, 7).tolist() == [1, 2, 4, 3, 0, 6, 5]  # NaN last
    assert top_k(scores, 100).tolist() == top_k(scores, 7).tolist()
    assert top_k(scores, 0).tolist() == [] and top_k(np.array([]), 3).tolist() == []
    rng = np.random.default_rng(0)
    for _ in range(50):  # many ties: same as a full stable sort by (-score, index)
        s = rng.integers(0, 5, 40).astype(float)
        k = int(rng.integers(0, 41))
        assert top_k(s, k).tolist() == np.lexsort((np.arange(40), -s))[:k].tolist()


def _sequential_probabilities(w: np.ndarray, k: int) -> dict[tuple[int, ...], float]:
    """Exact probabilities of every ordered draw of k items without replacement with P ∝ w."""
    out = {}
    for seq in itertools.permutations(range(len(w)), k):
        prob, left = 1.0, w.sum()
        for i in seq:
            prob *= w[i] / left
            left -= w[i]
        out[seq] = prob
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_gumbel_top_k_is_sequential_sampling_without_replacement(k):
    w = np.array([1.0, 2.0, 3.0, 4.0])
    exact = _sequential_probabilities(w, k)
    rng = np.random.default_rng(1)
    draws = 20000
    counts: dict[tuple[int, ...], int] = dict.fromkeys(exact, 0)
    for _ in range(draws):
        counts[tuple(gumbel_top_k(np.log(w), k, rng).tolist())] += 1
    for seq, p in exact.items():  # ordered draws, so this checks inclusion and draw order
        assert abs(counts[seq] / draws - p) < 4.5 * math.sqrt(p * (1 - p) / draws) + 1e-9, (seq, counts[seq], p)
    inclusion = np.zeros(4)
    for seq, c in counts.items():
        inclusion[list(seq)] += c / draws
    expected = np.zeros(4)
    for seq, p in exact.items():
        expected[list(seq)] += p
    assert np.allclose(inclusion, expected, atol=0.015)
    if k == 2:  # sampling *with* replacement or plain top-k would be far off
        assert abs(expected[0] - 0.2345) < 1e-3


def test_gumbel_top_k_never_draws_zero_weight():
    rng = np.random.default_rng(0)
    log_w = np.array([-np.inf, 0.0, -np.inf, math.log(2.0)])  # weights 0, 1, 0, 2
    for _ in range(100):
        assert sorted(gumbel_top_k(log_w, 3, rng).tolist()) == [1, 3]


def test_segmented_top_k_equals_a_loop_over_groups():
    rng = np.random.default_rng(2)
    for _ in range(30):
        n, k = 300, int(rng.integers(1, 12))
        groups = rng.integers(-1, k, n)  # -1: not eligible
        keys = rng.integers(0, 6, n).astype(float)  # heavy ties
        quotas = rng.integers(0, 40, k)
        got = segmented_top_k(keys, groups, quotas)
        want = []
        for g in range(k):
            members = np.flatnonzero(groups == g)
            want += members[top_k(keys[members], quotas[g])].tolist()
        assert got.tolist() == sorted(want)
        noise = rng.gumbel(size=n)
        log_w = rng.normal(size=n)
        got = segmented_gumbel_top_k(log_w, groups, quotas, noise=noise)
        assert got.tolist() == segmented_top_k(log_w + noise, groups, quotas).tolist()
    with pytest.raises(ValueError):
        segmented_top_k(np.zeros(3), np.array([0, 1, 2]), np.array([1, 1]))


def test_quality_sampling_picks_high_quality_at_the_theoretical_rate():
    """§4.9: half q=5, half q=0 per blob, quota 1: P(high) = e^5/(e^5+1) = 0.9933."""
    groups = np.repeat(np.arange(8), BLOBS)
    quality = np.concatenate([np.arange(s) % 2 * 5.0 for s in BLOBS])
    quotas = np.ones(8, np.int64)
    picks = np.concatenate([segmented_gumbel_top_k(quality, groups, quotas, np.random.default_rng(seed))
                            for seed in range(2000)])
    assert len(picks) == 16000 and (np.bincount(groups[picks]) == 2000).all()
    share = float((quality[picks] == 5).mean())
    assert share >= 0.99 and abs(share - math.exp(5) / (math.exp(5) + 1)) < 0.003
    uniform = np.concatenate([segmented_gumbel_top_k(np.zeros_like(quality), groups, quotas,
                                                     np.random.default_rng(seed)) for seed in range(200)])
    assert 0.4 < (quality[uniform] == 5).mean() < 0.6


def test_fraction_to_k_floors():
    assert fraction_to_k(0.1, 25) == 2 and fraction_to_k(0.05, 2050) == 102 and fraction_to_k(0.0, 9) == 0
    assert fraction_to_k(1.0, 7) == 7 and fraction_to_k(0.999, 1000) == 999
    assert fraction_to_k(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996 in floating point
    with pytest.raises(ValueError):
        fraction_to_k(1.5, 10)


def test_quotas_equal_proportional_and_redistribute():
    sizes = np.array([100, 5, 0, 50])
    assert allocate_quotas(sizes, 40, "equal").tolist() == [10, 5, 0, 10]  # the repo: 15 lost
    assert allocate_quotas(sizes, 40, "equal", redistribute=True).tolist() == [18, 5, 0, 17]
    assert allocate_quotas(sizes, 40, "proportional").tolist() == [25, 1, 0, 12]
    assert allocate_quotas(sizes, 40, "proportional", redistribute=True).tolist() == [26, 1, 0, 13]
    assert allocate_quotas(sizes, 1000, "equal", redistribute=True).tolist() == sizes.tolist()
    assert allocate_quotas(np.array(BLOBS), 80).tolist() == [10] * 8
    assert allocate_quotas(np.zeros(3, np.int64), 5).tolist() == [0, 0, 0]
    rng = np.random.default_rng(3)
    for _ in range(200):
        sizes = rng.integers(0, 60, int(rng.integers(1, 20)))
        budget = int(rng.integers(0, 800))
        for mode in ("equal", "proportional"):
            plain = allocate_quotas(sizes, budget, mode)
            full = allocate_quotas(sizes, budget, mode, redistribute=True)
            assert (plain <= full).all() and (full <= sizes).all()
            assert full.sum() == min(budget, sizes.sum()) and plain.sum() <= budget
        # equal + redistribute is water-filling: clusters with room left are within 1 of each other
        equal = allocate_quotas(sizes, budget, "equal", redistribute=True)
        open_ = equal[equal < sizes]
        assert len(open_) == 0 or (open_.max() - open_.min() <= 1 and (equal[equal == sizes] <= open_.max()).all())
    with pytest.raises(ValueError):
        allocate_quotas(np.array([1, 2]), 2, "cubic")


def test_cluster_weights_softmax_of_mean_delta():
    """§4.9: Δ=2 for every member of cluster 0, 0 elsewhere: w_0 = e^2/(e^2+7) = 0.5135."""
    clusters = np.repeat(np.arange(8), BLOBS)
    deltas = np.where(clusters == 0, 2.0, 0.0)
    w = cluster_weights(deltas, clusters, 8)
    assert w[0] == pytest.approx(math.exp(2) / (math.exp(2) + 7)) and w[0] == pytest.approx(0.5135, abs=1e-4)
    assert w.sum() == pytest.approx(1.0) and np.allclose(w[1:], w[1])
    big = cluster_weights(deltas * 500, clusters, 8)  # Δ=1000: max subtracted, no overflow
    assert np.isfinite(big).all() and big[0] == pytest.approx(1.0)
    # clusters 6 and 7 without scored members (NaN Δ): weight zero, or the mean of the others' scores
    unscored = np.where(clusters >= 6, np.nan, deltas)
    zero = cluster_weights(unscored, clusters, 8)
    assert zero[6] == zero[7] == 0 and zero[0] == pytest.approx(math.exp(2) / (math.exp(2) + 5))
    mean = cluster_weights(unscored, clusters, 8, empty_cluster_weight="mean")
    s_bar = 2.0 / 6
    assert mean[6] == pytest.approx(math.exp(s_bar) / (math.exp(2) + 5 + 2 * math.exp(s_bar)))
    shrunk = cluster_weights(np.array([4.0, 0.0]), np.array([0, 1]), 2, prior_count=5)  # n_j=1, s̄=2
    assert shrunk[0] / shrunk[1] == pytest.approx(math.exp((4 + 10) / 6 - (0 + 10) / 6))
    assert np.allclose(cluster_weights(np.full(3, np.nan), np.arange(3), 3), 1 / 3)


def test_next_round_share_matches_the_weights():
    clusters = np.repeat(np.arange(8), BLOBS)
    selected = np.zeros(len(clusters), bool)
    for g in range(8):  # S_t: 10 per blob
        selected[np.flatnonzero(clusters == g)[:10]] = True
    w = cluster_weights(np.where(clusters == 0, 2.0, 0.0), clusters, 8)
    rng = np.random.default_rng(4)
    from_zero, total = 0, 0
    for _ in range(500):
        new = next_round(clusters, selected, w, 80, rng)
        assert not selected[new].any() and len(np.unique(new)) == len(new)
        from_zero += int((clusters[new] == 0).sum())
        total += len(new)
    assert total == 500 * 80  # no cluster ran out of unselected rows
    assert abs(from_zero / total - w[0]) < 4 * math.sqrt(w[0] * (1 - w[0]) / total) + 0.002
    # capacity: all weight on cluster 7 (40 rows left) takes at most what is left
    only7 = np.eye(8)[7]
    new = next_round(clusters, selected, only7, 80, np.random.default_rng(0))
    assert len(new) == 40 and (clusters[new] == 7).all()
    assert quotas_from_weights(only7, np.full(8, 100), 30, np.random.default_rng(0)).tolist() == [0] * 7 + [30]
    with pytest.raises(ValueError):
        quotas_from_weights(np.array([1.0, -1.0]), np.array([3, 3]), 2, np.random.default_rng(0))


def test_draw_size_budget_and_repo_rules():
    assert draw_size(1000, 3, 512) == 333
    assert draw_size(1000, 3, 512, rule="repo") == 0  # the repo's N·p/K/R: K times smaller
    assert draw_size(100000, 3, 512, rule="repo") == 65

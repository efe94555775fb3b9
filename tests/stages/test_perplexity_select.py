"""Perplexity decisions on known inputs (docs/methods.md §6.5), without a model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from curate.kernels.chunked_ce import sequence_nll, token_nll

from curate.stages.perplexity import ccnet_perplexity, perplexity_select

PPL = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0])  # ranks: 1=index1 ... 10=index9


def kept(reason: np.ndarray) -> list[int]:
    return [i for i, r in enumerate(reason) if r is None]


def test_ccnet_formula_known_answer():
    # two lines: log10 P = -6.0 over 2 words and -4.0 over 3 words -> lengths 3 and 4 -> 10^(10/7)
    assert ccnet_perplexity([-6.0, -4.0], [2, 3]) == pytest.approx(26.827, abs=5e-4)


def test_uniform_model_has_perplexity_equal_to_vocabulary_size():
    # a "model" whose logits are equal for every token: NLL = log 4 for every position -> PPL = 4 exactly
    labels = torch.tensor([0, 3, 2, 1, 1, 0])
    nll = token_nll(torch.ones(6, 1), torch.zeros(4, 1), labels)
    _, mean, count = sequence_nll(nll.view(2, 3), torch.ones(2, 3))
    assert torch.exp(mean).tolist() == pytest.approx([4.0, 4.0], abs=1e-6) and count.tolist() == [3, 3]


def test_band_keeps_inclusive_range_with_open_ends():
    reason, _ = perplexity_select(PPL, "band", min_ppl=3.0, max_ppl=8.0)
    assert kept(reason) == [0, 3, 4, 6, 7, 8]
    assert reason[1] == "ppl_below_min" and reason[9] == "ppl_above_max"
    assert kept(perplexity_select(PPL, "band", max_ppl=2.0)[0]) == [1, 5]
    assert kept(perplexity_select(PPL, "band")[0]) == list(range(10))


def test_lowest_highest_middle_fractions():
    low, _ = perplexity_select(PPL, "lowest", fraction=0.3)
    assert kept(low) == [1, 3, 5] and low[0] == "ppl_above_p30"
    high, _ = perplexity_select(PPL, "highest", fraction=0.2)
    assert kept(high) == [2, 9] and high[0] == "ppl_below_p80"
    mid, _ = perplexity_select(PPL, "middle", fraction=0.5)  # ranks 3..7 of 10: values 3,4,5,6,7 minus...
    assert sorted(PPL[kept(mid)].tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert mid[1] == "ppl_below_p25" and mid[9] == "ppl_above_p75"


def test_ties_break_by_lower_position():
    reason, _ = perplexity_select(np.array([2.0, 1.0, 1.0, 1.0]), "lowest", fraction=0.5)
    assert kept(reason) == [1, 2]


def test_percentile_buckets_like_ccnet():
    ppl = np.arange(1.0, 101.0)  # 1..100
    reason, bucket = perplexity_select(ppl, "percentile_buckets", cutoffs=[30, 60], keep=["head"])
    p30, p60 = np.percentile(ppl, [30, 60])
    assert set(np.flatnonzero(bucket == "head")) == set(np.flatnonzero(ppl < p30))
    assert set(np.flatnonzero(bucket == "tail")) == set(np.flatnonzero(ppl >= p60))
    assert kept(reason) == list(np.flatnonzero(ppl < p30)) and reason[99] == "ppl_bucket_tail"


def test_percentiles_are_taken_per_group():
    ppl = np.array([1.0, 2.0, 3.0, 4.0, 100.0, 200.0, 300.0, 400.0])
    groups = np.array(["en", "en", "en", "en", "code", "code", "code", "code"])
    reason, _ = perplexity_select(ppl, "lowest", fraction=0.5, groups=groups)
    assert kept(reason) == [0, 1, 4, 5]  # the lowest half of each group, not the global lowest half
    assert kept(perplexity_select(ppl, "lowest", fraction=0.5)[0]) == [0, 1, 2, 3]


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
def test_fraction_sizes_are_floors(fraction):
    ppl = np.random.default_rng(0).random(37)
    for mode in ("lowest", "highest", "middle"):
        assert len(kept(perplexity_select(ppl, mode, fraction=fraction)[0])) == math.floor(fraction * 37)

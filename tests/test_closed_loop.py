"""Closed-loop arithmetic on known answers: token-matched draws, t-intervals, paired differences, data efficiency."""

import math

import numpy as np
import pytest
from scipy import stats

from curate.methods.closed_loop import data_efficiency, paired, random_prefix, summarize


def test_random_prefix_stops_where_tokens_come_closest_to_the_budget():
    tokens = np.array([10, 20, 30, 40])
    order = np.array([3, 0, 2, 1])  # cumulative 40, 50, 80, 100
    assert random_prefix(tokens, order, 48).tolist() == [3, 0]  # 50 is closer than 40
    assert random_prefix(tokens, order, 44).tolist() == [3]  # 40 is closer than 50
    assert random_prefix(tokens, order, 80).tolist() == [3, 0, 2]
    assert random_prefix(tokens, order, 500).tolist() == [3, 0, 2, 1]  # the pool is smaller than the budget


def test_summary_interval_is_students_t():
    values = [2.0, 2.5, 3.1, 2.2]
    out = summarize(values)
    sem = np.std(values, ddof=1) / math.sqrt(4)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=sem)
    assert out["mean"] == pytest.approx(2.45)
    assert out["ci95"] == pytest.approx([low, high])
    assert summarize([1.0]) == {"mean": 1.0, "std": None, "ci95": None}


def test_paired_interval_matches_scipy_paired_t_test():
    selection = [5.1, 5.3, 5.0, 5.2]
    random = [5.4, 5.5, 5.5, 5.3]
    out = paired(selection, random)
    result = stats.ttest_rel(selection, random)
    ci = result.confidence_interval(0.95)
    assert out["diff"] == pytest.approx([-0.3, -0.2, -0.5, -0.1])
    assert out["ci95"] == pytest.approx([ci.low, ci.high])
    assert out["excludes_zero"] is bool(result.pvalue < 0.05)
    assert paired([1.0, 2.0, 3.0], [1.1, 1.9, 3.05])["excludes_zero"] is False


def test_data_efficiency_interpolates_log_linearly_between_random_arms():
    points = [(1, 3.0), (2, 2.6), (4, 2.2)]
    assert data_efficiency(2.6, points) == pytest.approx(2.0)
    # halfway between 2.6 and 2.2 in loss is halfway between log 2 and log 4: sqrt(8)
    assert data_efficiency(2.4, points) == pytest.approx(math.sqrt(8))
    assert data_efficiency(2.8, points) == pytest.approx(math.sqrt(2))
    assert data_efficiency(2.1, points) == ">4"
    assert data_efficiency(3.2, points) == "<1"
    assert data_efficiency(2.6, list(reversed(points))) == pytest.approx(2.0)  # order does not matter
    assert data_efficiency(2.0, [(1, 3.0)]) == ">1"

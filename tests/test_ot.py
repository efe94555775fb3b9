"""Entropic OT and its gradient (docs/methods.md §5.4-§5.5, the synthetic tests of §5.9), with POT as the
reference: its exact solver (`ot.emd2`) for the primal cost and its log-domain Sinkhorn for the potentials."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from curate.methods.ot import calibrated_gradient, mean_squared_distance, sinkhorn

ot = pytest.importorskip("ot")


def _ranked(g: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(calibrated_gradient(g), kind="stable")[:k]


def test_one_dimensional_sanity() -> None:
    """§5.9.1: targets ~ N(+1, 0.1²); the pool is half N(-1, 0.1²), half N(+1, 0.1²); eps 0.01, k = 1000: at least
    95% of the picks are +1 points (here: all of them)."""
    rng = np.random.default_rng(0)
    targets = rng.normal(1, 0.1, (200, 1))
    pool = np.concatenate([rng.normal(-1, 0.1, (1000, 1)), rng.normal(1, 0.1, (1000, 1))])
    result = sinkhorn(targets, pool, epsilon=0.01, tolerance=1e-3)
    assert result.converged
    picked = _ranked(result.g, 1000)
    assert (picked >= 1000).mean() >= 0.95


def test_under_represented_mode() -> None:
    """§5.9.2: targets half at +1, half at +3; the pool 90% at +1, 10% at +3; k = 10% of the pool. GOT-D picks mostly
    +3 points, the under-represented mode; nearest-neighbour matching (the candidates closest to any target)
    picks mostly +1 points."""
    rng = np.random.default_rng(1)
    targets = np.concatenate([rng.normal(1, 0.1, (100, 1)), rng.normal(3, 0.1, (100, 1))])
    pool = np.concatenate([rng.normal(1, 0.1, (900, 1)), rng.normal(3, 0.1, (100, 1))])
    is_rare = np.arange(1000) >= 900
    result = sinkhorn(targets, pool, epsilon=0.01, tolerance=1e-3)
    got_d = _ranked(result.g, 100)
    nearest = np.abs(pool - targets.T).min(axis=1)
    matched = np.argsort(nearest, kind="stable")[:100]
    assert is_rare[got_d].mean() >= 0.9
    assert is_rare[matched].mean() <= 0.3


def test_gradient_matches_finite_differences() -> None:
    """§5.9.3: move mass δ = 1e-4 onto candidate j (spread off the others), re-solve: the change of the OT cost over δ
    equals the calibrated gradient within 5% (candidates whose gradient is not tiny)."""
    rng = np.random.default_rng(2)
    targets, pool = rng.normal(size=(20, 2)), rng.normal(size=(30, 2)) + 0.5
    options = {"epsilon": 0.1, "tolerance": 1e-13, "momentum": 1.0, "max_iter": 20_000, "dtype": torch.float64}
    base = sinkhorn(targets, pool, **options)
    grad = calibrated_gradient(base.g)
    delta, n = 1e-4, len(pool)
    checked = 0
    for j in np.flatnonzero(np.abs(grad) > 0.2 * np.abs(grad).max())[:8]:
        b = np.full(n, 1 / n) - delta / (n - 1)
        b[j] = 1 / n + delta
        moved = sinkhorn(targets, pool, b=b, **options)
        finite = (moved.cost - base.cost) / delta
        assert finite == pytest.approx(grad[j], rel=0.05), (j, finite, grad[j])
        checked += 1
    assert checked >= 4


def test_potentials_against_exact_solver() -> None:
    """§5.9.3, 20 x 30 with eps -> 0: f_i + g_j <= C_ij everywhere (dual feasibility), and the dual value
    <a,f> + <b,g> and the primal cost <C,P> of our plan are within eps·log(m·n) of POT's exact OT cost."""
    rng = np.random.default_rng(3)
    targets, pool = rng.normal(size=(20, 3)), rng.normal(size=(30, 3))
    eps = 0.02  # mean cost 7: the plan is nearly the exact one, and over-relaxation (1.8) converges in ~3k steps
    result = sinkhorn(targets, pool, epsilon=eps, tolerance=1e-6, momentum=1.8, max_iter=20_000,
                      dtype=torch.float64)
    assert result.converged
    cost = ot.dist(targets, pool)  # squared Euclidean
    exact = ot.emd2(np.full(20, 1 / 20), np.full(30, 1 / 30), cost)
    assert (result.f[:, None] + result.g[None, :] <= cost + 1e-9).all()
    plan = np.exp((result.f[:, None] + result.g[None, :] - cost) / eps)
    gap = eps * np.log(20 * 30)
    assert abs(result.cost - exact) <= gap
    assert exact <= (plan * cost).sum() <= exact + 1e-3  # measured: 5e-4 above
    assert np.allclose(plan.sum(0), 1 / 30, atol=1e-6)


def test_potentials_match_pot_sinkhorn_log() -> None:
    """The same problem and eps through POT's `sinkhorn_log`: its potentials eps·log(u), eps·log(v) equal ours up
    to the shared additive constant, so the ranking and the calibrated gradient are the same."""
    rng = np.random.default_rng(4)
    targets, pool = rng.normal(size=(40, 4)), rng.normal(size=(60, 4))
    eps = 0.5
    ours = sinkhorn(targets, pool, epsilon=eps, tolerance=1e-12, momentum=1.3, max_iter=10_000,
                    dtype=torch.float64)
    _, log = ot.sinkhorn(np.full(40, 1 / 40), np.full(60, 1 / 60), ot.dist(targets, pool), eps,
                         method="sinkhorn_log", stopThr=1e-14, numItermax=100_000, log=True)
    g_pot = eps * log["log_v"]
    np.testing.assert_allclose(ours.g - ours.g.mean(), g_pot - g_pot.mean(), atol=1e-7)
    np.testing.assert_allclose(calibrated_gradient(ours.g), calibrated_gradient(g_pot), atol=1e-7)
    # momentum only changes how fast it gets there: the plain iteration gives the same potentials
    plain = sinkhorn(targets, pool, epsilon=eps, tolerance=1e-12, momentum=1.0, max_iter=10_000,
                     dtype=torch.float64)
    np.testing.assert_allclose(plain.g - plain.g.mean(), ours.g - ours.g.mean(), atol=1e-7)
    assert ours.iterations < plain.iterations


def test_relative_epsilon_and_mean_cost() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(15, 3)), rng.normal(size=(25, 3)) + 1
    dense_mean = ot.dist(x, y).mean()
    assert mean_squared_distance(torch.tensor(x), torch.tensor(y)) == pytest.approx(dense_mean, rel=1e-12)
    result = sinkhorn(x, y, epsilon=0.05, relative=True, tolerance=1e-6, dtype=torch.float64)
    assert result.epsilon == pytest.approx(0.05 * dense_mean, rel=1e-12)
    assert result.mean_cost == pytest.approx(dense_mean, rel=1e-12)


def test_not_converged_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(6)
    with caplog.at_level(logging.WARNING, logger="curate"):
        result = sinkhorn(rng.normal(size=(10, 2)), rng.normal(size=(20, 2)), epsilon=1e-3, tolerance=1e-9,
                          max_iter=3)
    assert not result.converged and result.iterations == 3 and result.error > 1e-9
    assert "did not converge" in caplog.text and "max_iter" in caplog.text


def test_calibrated_gradient() -> None:
    g = np.array([1.0, -2.0, 0.5, 3.0])
    expected = np.array([g[j] - np.delete(g, j).mean() for j in range(4)])
    np.testing.assert_allclose(calibrated_gradient(g), expected)
    assert (np.argsort(calibrated_gradient(g)) == np.argsort(g)).all()  # an increasing map of g


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="momentum"):
        sinkhorn(np.zeros((2, 1)), np.zeros((3, 1)), momentum=2.0)
    with pytest.raises(ValueError, match="both sides"):
        sinkhorn(np.zeros((0, 1)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="summing to 1"):
        sinkhorn(np.zeros((2, 1)), np.zeros((3, 1)), b=np.array([0.5, 0.5, 0.5]))

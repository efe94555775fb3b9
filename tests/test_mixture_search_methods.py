"""Mixture search's methods (docs/methods.md, "Mixture search"): RegMix's sampler, the regressors, the search and
CLIMB's next round, on the known answers of the shared spec (§17.9): the sampler's bounds and grid, coefficient
recovery, a known quadratic optimum, a known optimum of a unigram "proxy" found in rounds [32, 16], the objective's
direction, and `auto`'s fallback to the linear regressor."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest

from curate.methods.mixture_regression import (
    LightGBMMixtureRegressor,
    LinearMixtureRegressor,
    cross_validated_spearman,
    make_regressor,
    spearman,
)
from curate.methods.mixture_search import (
    best_candidates,
    draw_proxy_weights,
    natural_shares,
    next_round,
    part_tokens,
    round_to_grid,
    sample_weights,
    search,
    weight_bounds,
)

M = 2e-4


def assert_on_grid(mixtures: np.ndarray, m: float = M) -> None:
    """Every weight is 0 or in [m, 1], a multiple of m (±1e-12), and each mixture sums to 1."""
    assert np.all((mixtures == 0) | ((mixtures >= m - 1e-12) & (mixtures <= 1 + 1e-12)))
    assert np.abs(mixtures - m * np.round(mixtures / m)).max() <= 1e-12
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-12)


# --- 1. the sampler ---------------------------------------------------------------------------------------------


def test_sampler_bounds_grid_unique_and_seeded() -> None:
    """§17.9.1: P = 3, p = (0.5, 0.3, 0.2), n = 64."""
    p = [0.5, 0.3, 0.2]
    mixtures = sample_weights(p, 64, seed=42)
    assert mixtures.shape == (64, 3)
    assert np.all(mixtures <= np.minimum(15 * np.array(p), 1.0))
    assert_on_grid(mixtures)
    assert len(np.unique(mixtures, axis=0)) == 64
    assert np.array_equal(mixtures, sample_weights(p, 64, seed=42))
    as_set = {tuple(w) for w in mixtures}
    assert as_set != {tuple(w) for w in sample_weights(p, 64, seed=7)}


def test_sampler_respects_binding_bounds() -> None:
    """Small parts: u = min(15·p, 1) = (1, 0.15, 0.3) binds, and the rounded weights stay inside it."""
    p = [0.97, 0.01, 0.02]
    mixtures = sample_weights(p, 64, seed=1)
    np.testing.assert_allclose(weight_bounds(p), [1.0, 0.15, 0.3])
    assert np.all(mixtures <= weight_bounds(p) + 1e-12)
    assert mixtures[:, 1].max() > 0.1  # the bound is reached for, not just trivially met
    assert_on_grid(mixtures)


def test_sampler_draws_centre_on_the_tempered_shares() -> None:
    """Every Dirichlet(c·q) has mean q, whatever c: the accepted draws average to q ∝ p^0.5 = (0.415, 0.322,
    0.263), not to p = (0.5, 0.3, 0.2) (standard error of the mean with 6,400 draws ≈ 0.004)."""
    p = np.array([0.5, 0.3, 0.2])
    q = p**0.5 / (p**0.5).sum()
    draws = draw_proxy_weights(p, 6400, np.random.default_rng(0))
    assert len(draws) == 6400  # no bound binds for these shares
    np.testing.assert_allclose(draws.mean(axis=0), q, atol=0.015)
    assert np.all(np.abs(draws.mean(axis=0) - q) < np.abs(draws.mean(axis=0) - p))


def test_sampler_raises_when_too_few_distinct_mixtures() -> None:
    """Two parts on a grid of 0.25 have 5 mixtures: 10 proxies cannot be distinct."""
    with pytest.raises(ValueError, match=r"only 5 distinct mixtures .* n = 10"):
        sample_weights([0.5, 0.5], 10, min_weight=0.25)


def test_rounding_sums_to_one_on_the_grid() -> None:
    """Largest-remainder rounding: Σw = 1 exactly, small weights zeroed, an exact m kept."""
    w = round_to_grid(np.array([[1 / 3, 1 / 3, 1 / 3], [0.9999, 0.0001, 0.0], [1 - M, M, 0.0]]))
    assert_on_grid(w)
    np.testing.assert_array_equal(w[1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(w[2], [1 - M, M, 0.0], atol=1e-15)


def test_natural_shares_and_part_tokens() -> None:
    np.testing.assert_allclose(natural_shares([100, 300, 600]), [0.1, 0.3, 0.6])
    tokens = part_tokens(np.array([0.5, 0.3, 0.2]), [1000, 1000, 1000], 1001)
    assert tokens.sum() == 1001 and np.abs(tokens - np.array([500.5, 300.3, 200.2])).max() < 1
    with pytest.raises(ValueError, match="part 0: 20"):
        part_tokens(np.array([1.0, 0.0]), [50, 50], 1000)  # 1,000 tokens of a 50-token part: 20 passes > 15
    with pytest.raises(ValueError, match="positive"):
        natural_shares([10, 0])


# --- 2. regressors --------------------------------------------------------------------------------------------------


def linear_data(n: int, seed: int = 0, interaction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    W = rng.dirichlet([1.0, 1.0, 1.0], n)
    y = W @ [1.0, 1.5, 2.0] + interaction * W[:, 0] * W[:, 1] + rng.normal(0, 0.01, n)
    return W, y


def test_ridge_without_intercept_recovers_pure_part_losses() -> None:
    """§17.9.2: y = 1.0w1 + 1.5w2 + 2.0w3 + N(0, 0.01²), 128 draws: coefficients ± 0.02."""
    W, y = linear_data(128)
    model = LinearMixtureRegressor().fit(W, y)
    coefficients = model.describe()["coefficients"]
    assert list(coefficients) == ["w0", "w1", "w2"]
    np.testing.assert_allclose(list(coefficients.values()), [1.0, 1.5, 2.0], atol=0.02)
    np.testing.assert_allclose(model.predict(np.eye(3)), [1.0, 1.5, 2.0], atol=0.02)


def test_degree_two_recovers_the_interaction() -> None:
    """+0.8·w1·w2: degree 2 finds 0.8 ± 0.05 (and the pure-part terms stay ± 0.02)."""
    W, y = linear_data(128, interaction=0.8)
    coefficients = LinearMixtureRegressor(degree=2).fit(W, y).describe()["coefficients"]
    assert coefficients["w0*w1"] == pytest.approx(0.8, abs=0.05)
    assert abs(coefficients["w0*w2"]) < 0.05 and abs(coefficients["w1*w2"]) < 0.05
    np.testing.assert_allclose([coefficients[f"w{i}"] for i in range(3)], [1.0, 1.5, 2.0], atol=0.02)


def test_lightgbm_ranks_held_out_proxies() -> None:
    """§17.9.2: LightGBM with CLIMB's settings, held-out Spearman >= 0.9 on a 200/50 split; lightgbm 4.7 warns
    about `eval_set`, so the fit must not warn at all."""
    pytest.importorskip("lightgbm")
    W, y = linear_data(250, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = LightGBMMixtureRegressor().fit(W[:200], y[:200])
    assert spearman(y[200:], model.predict(W[200:])) >= 0.9
    info = model.describe()
    assert (info["train"], info["val"], info["stopping_rounds"]) == (180, 20, 20)
    assert info["settings"]["max_depth"] == 4 and 0 < info["best_iteration"] <= 1000
    assert model.model_text().startswith("tree")
    small = LightGBMMixtureRegressor().fit(W[:64], y[:64]).describe()  # CLIMB's first round: 57 + 7 proxies
    assert (small["train"], small["val"], small["stopping_rounds"]) == (57, 7, 7)


def test_known_quadratic_minimum_inside_the_simplex() -> None:
    """y = |w - w*|², w* = (0.5, 0.3, 0.2), 64 proxies, degree 2 (which spans this y exactly). The 128 best of
    10^5 Dirichlet(1/3) candidates lie within r ≈ 0.03 of w* (density ≈ 0.5 there: 128 / (10^5 · 0.5 · π r²) = 1);
    their mean is off by about r / (2√128) ≈ 0.0013 plus the density's tilt across the disc, r²/4 · |∇log f|
    ≈ 0.0005, plus m / 2 from rounding: measured ≤ 0.0034 over 10 seeds, so 0.01 is a 3x margin."""
    target = np.array([0.5, 0.3, 0.2])
    for seed in (0, 1):
        W = sample_weights([1 / 3] * 3, 64, seed=seed)
        y = ((W - target) ** 2).sum(axis=1) + np.random.default_rng(seed).normal(0, 0.001, 64)
        result = search(LinearMixtureRegressor(degree=2).fit(W, y), [1 / 3] * 3, seed=seed)
        np.testing.assert_allclose(result.weights, target, atol=0.01)
        assert_on_grid(result.weights[None, :])
        assert result.predicted == pytest.approx(0.0, abs=0.002)
        assert result.accepted == 100_000 and len(result.candidates) == 1000
        assert np.all(np.diff(result.predictions) >= 0)  # best (lowest) first
        np.testing.assert_array_equal(result.weights, round_to_grid(result.candidates[:128].mean(axis=0)))
        best = search(LinearMixtureRegressor(degree=2).fit(W, y), [1 / 3] * 3, seed=seed, final="best")
        np.testing.assert_allclose(best.weights, target, atol=0.01)


def test_next_round_draws_from_the_best_distinct_candidates() -> None:
    """CLIMB: n_next uniformly without replacement from the top max(n_next², 128); here on the grid, distinct."""
    W, y = linear_data(64)
    regressor = LinearMixtureRegressor().fit(W, y)
    shares = [0.5, 0.3, 0.2]
    for n_next, size in ((8, 128), (20, 400)):
        pool, predictions, _ = best_candidates(regressor, shares, size, rng=np.random.default_rng(5), distinct=True)
        assert len(pool) == size and np.all(np.diff(predictions) >= 0)
        chosen = next_round(regressor, shares, n_next, seed=5)
        assert len({tuple(w) for w in chosen}) == n_next
        assert {tuple(w) for w in chosen} <= {tuple(w) for w in pool}
        assert_on_grid(chosen)
    chosen = next_round(regressor, shares, 8, seed=5, exclude=pool[:100])
    assert not {tuple(w) for w in chosen} & {tuple(w) for w in pool[:100]}


# --- 3. a known optimum, no training ---------------------------------------------------------------------------------

TARGET = np.array([0.4, 0.3, 0.2, 0.1])
PARTS = np.array([TARGET, [0.25] * 4, [0.1, 0.2, 0.3, 0.4]])  # A = the target, B = uniform, C = reversed


def unigram_proxy(W: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cross-entropy of p_T under the add-one-smoothed unigram MLE of 10^5 tokens drawn from Σ w_i p_i."""
    counts = np.stack([rng.multinomial(100_000, w @ PARTS) for w in np.atleast_2d(W)])
    return -(np.log((counts + 1) / (100_000 + 4)) @ TARGET)


def unigram_rounds(seed: int, sign: float = 1.0, kind: str = "auto") -> tuple[np.ndarray, dict]:
    """Rounds [32, 16] (CLIMB), the regressor refitted on all proxies so far, then the mean of the top 128;
    `sign` = -1 maximises -loss instead of minimising the loss."""
    shares, direction = [1 / 3] * 3, "min" if sign > 0 else "max"
    rng = np.random.default_rng(seed + 1000)
    W = sample_weights(shares, 32, seed=seed)
    y = unigram_proxy(W, rng)
    regressor = make_regressor(kind, W=W, y=sign * y, seed=seed).fit(W, sign * y)
    new = next_round(regressor, shares, 16, seed=seed, direction=direction, exclude=W)
    assert len({tuple(w) for w in np.vstack([W, new])}) == 48  # 16 new mixtures, none run before
    W, y = np.vstack([W, new]), np.concatenate([y, unigram_proxy(new, rng)])
    regressor = make_regressor(kind, W=W, y=sign * y, seed=seed).fit(W, sign * y)
    return search(regressor, shares, top_k=128, seed=seed, direction=direction).weights, regressor.describe()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unigram_optimum_found_in_two_rounds(seed: int) -> None:
    """§17.9.3: the optimum is w = (1, 0, 0) with loss H(p_T) = 1.2799; the uniform mixture gives ln 4."""
    weights, _ = unigram_rounds(seed)
    loss = float(unigram_proxy(weights, np.random.default_rng(seed + 2000))[0])
    assert np.argmax(weights) == 0 and weights[0] > 0.5 and weights[2] < 0.15
    assert loss < math.log(4)


def test_unigram_optimum_with_lightgbm() -> None:
    """The same with the trees forced: they predict flat near the corner, so the top 128 spread out (measured
    w_A 0.67-0.80 over 10 seeds), but the known answer's bounds hold."""
    pytest.importorskip("lightgbm")
    weights, info = unigram_rounds(0, kind="lightgbm")
    assert info["kind"] == "lightgbm"
    assert np.argmax(weights) == 0 and weights[0] > 0.5 and weights[2] < 0.15
    assert float(unigram_proxy(weights, np.random.default_rng(2000))[0]) < math.log(4)


# --- 4. direction ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "lightgbm"])
def test_maximising_minus_loss_gives_the_same_weights(kind: str) -> None:
    """§17.9.4: objective = -loss with direction max: identical weights, through both rounds."""
    if kind == "lightgbm":
        pytest.importorskip("lightgbm")
    low, _ = unigram_rounds(3, kind=kind)
    high, _ = unigram_rounds(3, sign=-1.0, kind=kind)
    np.testing.assert_array_equal(low, high)


# --- 5. auto -----------------------------------------------------------------------------------------------------


def test_auto_falls_back_to_linear_without_lightgbm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # `import lightgbm` now raises ImportError
    W, y = linear_data(128)
    model = make_regressor("auto", W=W, y=y)
    assert isinstance(model, LinearMixtureRegressor)
    assert model.describe()["selection"]["reason"] == "lightgbm is not installed"
    with pytest.raises(ImportError, match="pip install lightgbm"):
        make_regressor("lightgbm", 128, 3)
    with pytest.raises(ImportError, match="pip install lightgbm"):
        LightGBMMixtureRegressor().fit(W, y)


def test_auto_falls_back_to_linear_with_few_proxies() -> None:
    """n < 4P: 11 proxies for 3 parts stay linear without being compared (no W needed)."""
    pytest.importorskip("lightgbm")
    model = make_regressor("auto", n_samples=11, n_parts=3)
    assert isinstance(model, LinearMixtureRegressor)
    assert model.describe()["selection"]["reason"] == "11 proxies < 4 x 3 parts"
    with pytest.raises(ValueError, match="needs W and y"):
        make_regressor("auto", n_samples=12, n_parts=3)


def test_auto_picks_the_higher_cross_validated_spearman() -> None:
    """A step response (y jumps where w1 > 0.5) ranks better with trees; a linear one with ridge."""
    pytest.importorskip("lightgbm")
    W, y = linear_data(120, seed=2)
    linear = make_regressor("auto", W=W, y=y)
    scores = linear.describe()["selection"]["cv_spearman"]
    assert isinstance(linear, LinearMixtureRegressor) and scores["linear"] > scores["lightgbm"]
    assert scores["linear"] == pytest.approx(cross_validated_spearman(W, y, LinearMixtureRegressor))
    step = (W[:, 0] > 0.5).astype(float) + 0.3 * (W[:, 1] > 0.4) + np.random.default_rng(2).normal(0, 0.01, 120)
    trees = make_regressor("auto", W=W, y=step)
    assert isinstance(trees, LightGBMMixtureRegressor)
    assert trees.describe()["selection"]["chose"] == "lightgbm"

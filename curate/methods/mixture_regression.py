"""Regressors from mixture weights to a proxy objective, for mixture search (docs/methods.md §17.5).

A proxy run is one row: its mixture weights w (P parts, Σw = 1) and the objective it reached (a validation loss,
an accuracy). Every regressor here has the same interface, `fit(W, y)`, `predict(W)` and `describe()` (a plain
dict for `cv.json` and the stage's report):

- `LinearMixtureRegressor`: ridge **without intercept** on w (Σw = 1 makes an intercept collinear with the
  weights, so coefficient i is the predicted objective of pure part i); `degree=2` adds the w_i·w_j terms (i < j:
  w_i² = w_i - Σ_{j≠i} w_i·w_j on the simplex, so squares would be collinear too; this is Scheffé's quadratic
  mixture model).
- `LightGBMMixtureRegressor`: CLIMB's `8_predict.py` settings (gbdt, 1,000 trees, learning rate 0.01, L1 = L2 = 1,
  depth 4, 5 rows a leaf) with early stopping on a seeded 90/10 split, `stopping_rounds = min(20, |val|)`.
  lightgbm is optional and imported only when such a regressor is fitted.
- `make_regressor(kind)`: `linear`, `lightgbm`, or `auto`: linear when lightgbm is missing or there are fewer
  than 4 proxies a part (trees then split on noise), else whichever has the higher 5-fold cross-validated
  Spearman (ties go to the linear one).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np
from scipy.stats import spearmanr

RegressorKind = Literal["auto", "lightgbm", "linear"]
MIN_ROWS_PER_PART = 4  # below 4 proxies a part, `auto` uses the linear regressor without comparing


class MixtureRegressor(Protocol):
    def fit(self, W: np.ndarray, y: np.ndarray) -> MixtureRegressor: ...

    def predict(self, W: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def _as_xy(W: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] == 0:
        raise ValueError(f"mixture weights must be a 2-d array (proxies x parts), got shape {W.shape}")
    if y is None:
        return W, None
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != len(W):
        raise ValueError(f"{len(W)} mixtures but {len(y)} objective values")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(y))):
        raise ValueError("mixture weights and objective values must be finite")
    return W, y


def mixture_features(W: np.ndarray, degree: int = 1) -> tuple[np.ndarray, list[str]]:
    """The columns of the linear model and their names: w_i (`w0`, ...), then for degree 2 w_i·w_j, i < j."""
    if degree not in (1, 2):
        raise ValueError(f"degree must be 1 or 2, got {degree}")
    P = W.shape[1]
    names = [f"w{i}" for i in range(P)]
    if degree == 1:
        return W, names
    i, j = np.triu_indices(P, k=1)
    return np.hstack([W, W[:, i] * W[:, j]]), names + [f"w{a}*w{b}" for a, b in zip(i, j, strict=True)]


class LinearMixtureRegressor:
    """Ridge regression without intercept on w (degree 1) or on w and the w_i·w_j (degree 2)."""

    kind = "linear"

    def __init__(self, degree: int = 1, alpha: float = 1e-4) -> None:
        if degree not in (1, 2):
            raise ValueError(f"degree must be 1 or 2, got {degree}")
        if alpha < 0:
            raise ValueError(f"the ridge penalty alpha must be >= 0, got {alpha}")
        self.degree, self.alpha = degree, float(alpha)
        self.coef_: np.ndarray | None = None
        self.names_: list[str] = []
        self.selection: dict[str, Any] | None = None  # set by make_regressor(kind="auto")

    def fit(self, W: np.ndarray, y: np.ndarray) -> LinearMixtureRegressor:
        W, y = _as_xy(W, y)
        X, self.names_ = mixture_features(W, self.degree)
        # min ||Xb - y||² + α||b||² as one least-squares problem on [X; √α I]: no normal equations to square the
        # condition number, and α = 0 gives the minimum-norm solution when there are more columns than proxies
        F = X.shape[1]
        A = np.vstack([X, np.sqrt(self.alpha) * np.eye(F)])
        b = np.concatenate([y, np.zeros(F)])
        self.coef_ = np.linalg.lstsq(A, b, rcond=None)[0]
        return self

    def predict(self, W: np.ndarray) -> np.ndarray:
        if self.coef_ is None:
            raise ValueError("fit the regressor before predicting")
        W, _ = _as_xy(W)
        return mixture_features(W, self.degree)[0] @ self.coef_

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "degree": self.degree, "alpha": self.alpha}
        if self.coef_ is not None:
            info["coefficients"] = dict(zip(self.names_, map(float, self.coef_), strict=True))
        if self.selection is not None:
            info["selection"] = self.selection
        return info


def import_lightgbm() -> ModuleType | None:
    """The lightgbm module, or None when it is not installed (or its shared library does not load)."""
    try:
        return importlib.import_module("lightgbm")
    except (ImportError, OSError):
        return None


class LightGBMMixtureRegressor:
    """CLIMB's LightGBM regressor: early stopping on a seeded 90/10 shuffled split of the proxies."""

    kind = "lightgbm"

    def __init__(self, seed: int = 42, n_estimators: int = 1000, learning_rate: float = 0.01,
                 reg_alpha: float = 1.0, reg_lambda: float = 1.0, max_depth: int = 4,
                 min_child_samples: int = 5, max_stopping_rounds: int = 20) -> None:
        self.seed, self.max_stopping_rounds = seed, max_stopping_rounds
        self.params: dict[str, Any] = {
            "boosting_type": "gbdt", "objective": "regression", "metric": ["l1", "l2"],
            "n_estimators": n_estimators, "learning_rate": learning_rate, "random_state": seed,
            "reg_alpha": reg_alpha, "reg_lambda": reg_lambda, "max_depth": max_depth,
            "min_child_samples": min_child_samples, "verbosity": -1,
            # ours: one thread; proxies are tens to hundreds of rows, and OpenMP's waiting threads made fits 10x
            # slower on a busy machine
            "n_jobs": 1,
        }
        self.model_: Any = None
        self.split_: dict[str, int] = {}
        self.selection: dict[str, Any] | None = None

    def fit(self, W: np.ndarray, y: np.ndarray) -> LightGBMMixtureRegressor:
        W, y = _as_xy(W, y)
        lgb = import_lightgbm()
        if lgb is None:
            raise ImportError("regressor: lightgbm needs the lightgbm package (pip install lightgbm); "
                              "regressor: linear or auto work without it")
        n = len(W)
        order = np.random.default_rng(self.seed).permutation(n)
        cut = int(n * 0.9)  # CLIMB: int(len · 0.9) rows to train, the rest to stop on
        if cut == 0 or cut == n:
            raise ValueError(f"the LightGBM regressor needs at least 2 proxies for its 90/10 split, got {n}")
        train, val = order[:cut], order[cut:]
        rounds = min(self.max_stopping_rounds, len(val))  # CLIMB: 64 proxies leave 7 to stop on, not 20
        model = lgb.LGBMRegressor(**self.params)
        # lightgbm 4.7 deprecates eval_set for eval_X/eval_y; older versions know only eval_set
        if "eval_X" in inspect.signature(model.fit).parameters:
            evaluation: dict[str, Any] = {"eval_X": W[val], "eval_y": y[val]}
        else:
            evaluation = {"eval_set": [(W[val], y[val])]}
        model.fit(W[train], y[train], eval_metric="l2",
                  callbacks=[lgb.early_stopping(stopping_rounds=rounds, verbose=False)], **evaluation)
        self.model_ = model
        self.split_ = {"train": len(train), "val": len(val), "stopping_rounds": rounds}
        return self

    def predict(self, W: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise ValueError("fit the regressor before predicting")
        W, _ = _as_xy(W)
        return np.asarray(self.model_.predict(W), dtype=np.float64)  # at the best iteration of early stopping

    def model_text(self) -> str:
        """The fitted booster in LightGBM's text format (`regressor.txt`)."""
        if self.model_ is None:
            raise ValueError("fit the regressor before saving it")
        return str(self.model_.booster_.model_to_string())

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "settings": dict(self.params), **self.split_}
        if self.model_ is not None:
            info["best_iteration"] = int(self.model_.best_iteration_ or self.params["n_estimators"])
        if self.selection is not None:
            info["selection"] = self.selection
        return info


def cross_validated_predictions(W: np.ndarray, y: np.ndarray, factory: Callable[[], MixtureRegressor],
                                folds: int = 5, seed: int = 42) -> np.ndarray:
    """Out-of-fold predictions: each proxy predicted by a regressor fitted on the other folds (seeded shuffle)."""
    W, y = _as_xy(W, y)
    n = len(W)
    folds = min(folds, n)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 proxies, got {n}")
    predictions = np.empty(n)
    for held in np.array_split(np.random.default_rng(seed).permutation(n), folds):
        train = np.setdiff1d(np.arange(n), held)
        predictions[held] = factory().fit(W[train], y[train]).predict(W[held])
    return predictions


def spearman(y: np.ndarray, predictions: np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side is constant (no ranking to compare)."""
    y, predictions = np.asarray(y, np.float64), np.asarray(predictions, np.float64)
    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(predictions) == 0:
        return float("nan")
    return float(spearmanr(y, predictions).statistic)


def cross_validated_spearman(W: np.ndarray, y: np.ndarray, factory: Callable[[], MixtureRegressor],
                             folds: int = 5, seed: int = 42) -> float:
    """Spearman between the objective and its out-of-fold predictions, pooled over the folds (one number even
    when a fold holds 6 proxies, where a per-fold correlation is mostly noise)."""
    return spearman(y, cross_validated_predictions(W, y, factory, folds, seed))


def make_regressor(kind: RegressorKind = "auto", n_samples: int | None = None, n_parts: int | None = None,
                   W: np.ndarray | None = None, y: np.ndarray | None = None, *, degree: int = 1,
                   alpha: float = 1e-4, seed: int = 42, folds: int = 5) -> MixtureRegressor:
    """An unfitted regressor of `kind`. `auto` needs the proxies (W, y) only when it has to compare: with
    lightgbm installed and n_samples >= 4·n_parts. Its choice and the scores are in `describe()["selection"]`."""
    if kind == "linear":
        return LinearMixtureRegressor(degree, alpha)
    if kind == "lightgbm":
        if import_lightgbm() is None:
            raise ImportError("regressor: lightgbm needs the lightgbm package (pip install lightgbm); "
                              "regressor: linear or auto work without it")
        return LightGBMMixtureRegressor(seed)
    if kind != "auto":
        raise ValueError(f"regressor must be auto, lightgbm or linear, got {kind!r}")
    if W is not None:
        n_samples, n_parts = np.shape(W)
    if n_samples is None or n_parts is None:
        raise ValueError("regressor: auto needs n_samples and n_parts (or the proxies W, y)")
    linear = LinearMixtureRegressor(degree, alpha)
    if import_lightgbm() is None:
        linear.selection = {"kind": "auto", "chose": "linear", "reason": "lightgbm is not installed"}
        return linear
    if n_samples < MIN_ROWS_PER_PART * n_parts:
        linear.selection = {"kind": "auto", "chose": "linear",
                            "reason": f"{n_samples} proxies < {MIN_ROWS_PER_PART} x {n_parts} parts"}
        return linear
    if W is None or y is None:
        raise ValueError("regressor: auto compares the regressors by cross-validated Spearman and needs W and y")
    scores = {
        "linear": cross_validated_spearman(W, y, lambda: LinearMixtureRegressor(degree, alpha), folds, seed),
        "lightgbm": cross_validated_spearman(W, y, lambda: LightGBMMixtureRegressor(seed), folds, seed),
    }
    # NaN (constant predictions) never wins; a tie keeps the linear model, which extrapolates
    won = scores["lightgbm"] > scores["linear"] or (np.isnan(scores["linear"]) and not np.isnan(scores["lightgbm"]))
    selection = {"kind": "auto", "chose": "lightgbm" if won else "linear", "folds": folds, "cv_spearman": scores}
    if won:
        trees = LightGBMMixtureRegressor(seed)
        trees.selection = selection
        return trees
    linear.selection = selection
    return linear

"""Keep rules, validation metrics and the grader's answer parser of the `classifier` stage (docs/methods.md §15.5-15.7).

- `keep_mask`: `top_fraction` (the floor(f·N) highest scores, ties to the lower index), `threshold` (score ≥ t) or
  `pareto` (keep iff X > 1 - s with X ~ Lomax(α), seeded: P(keep) = (2 - s)^-α, Data-Juicer's "gpt3" rule).
- `binary_metrics` / `graded_metrics`: what a validation split says about a trained classifier.
- `parse_grade`: the last `score: <number>` of a grader's answer, if it lies on the scale.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from curate.methods.selection import fraction_to_k, top_k


def keep_mask(scores: np.ndarray, top_fraction: float | None = None, threshold: float | None = None,
              pareto_alpha: float | None = None, seed: int = 0) -> np.ndarray:
    """Which rows a keep rule keeps (exactly one rule given). NaN scores are never kept."""
    scores = np.asarray(scores, np.float64)
    keep = np.zeros(len(scores), bool)
    if top_fraction is not None:
        keep[top_k(scores, fraction_to_k(top_fraction, len(scores)))] = True
        return keep & np.isfinite(scores)
    if threshold is not None:
        return np.nan_to_num(scores, nan=-np.inf) >= threshold
    if pareto_alpha is not None:
        draws = np.random.default_rng(seed).pareto(pareto_alpha, len(scores))
        return draws > 1.0 - np.nan_to_num(scores, nan=-np.inf)
    raise ValueError("give one keep rule: top_fraction, threshold or pareto")


def binary_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """Accuracy, precision, recall and F1 at P ≥ 0.5; ROC-AUC and PR-AUC over the scores."""
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

    y = np.asarray(y).astype(np.int64)
    predicted = (np.asarray(score) >= 0.5).astype(np.int64)
    both = len(np.unique(y)) == 2
    return {"rows": len(y), "positives": int(y.sum()),
            "accuracy": float((predicted == y).mean()) if len(y) else None,
            "precision": float(precision_score(y, predicted, zero_division=0)),
            "recall": float(recall_score(y, predicted, zero_division=0)),
            "f1": float(f1_score(y, predicted, zero_division=0)),
            "roc_auc": float(roc_auc_score(y, score)) if both else None,
            "pr_auc": float(average_precision_score(y, score)) if both else None}


def graded_metrics(y: np.ndarray, score: np.ndarray, scale: tuple[float, float],
                   threshold: float | None = None) -> dict[str, float | None]:
    """MSE, Spearman, macro-F1 of the rounded clipped predictions, and F1 as binary at `threshold` (FineWeb-Edu
    reports 82% at 3)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import f1_score

    y, score = np.asarray(y, np.float64), np.asarray(score, np.float64)
    rounded = np.round(np.clip(score, *scale))
    out: dict[str, float | None] = {
        "rows": len(y), "mse": float(np.mean((score - y) ** 2)) if len(y) else None,
        "spearman": float(spearmanr(y, score).statistic) if len(y) > 2 and np.ptp(y) > 0 else None,
        "macro_f1": float(f1_score(np.round(y).astype(int), rounded.astype(int), average="macro", zero_division=0))}
    if threshold is not None:
        out["binary_f1"] = float(f1_score(y >= threshold, rounded >= threshold, zero_division=0))
    return out


_SCORE = re.compile(r"score\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_grade(answer: str | None, scale: tuple[float, float]) -> float | None:
    """The last `score: <n>` of an answer (`Educational score: 3`) if it lies on the scale, else None."""
    found = _SCORE.findall(answer or "")
    if not found:
        return None
    value = float(found[-1])
    return value if scale[0] <= value <= scale[1] else None


def stratified_split(y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions): `share` of each label value held out, seeded (§15.6)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    validation = []
    for value in np.unique(y):
        where = np.flatnonzero(y == value)
        rng.shuffle(where)
        validation.append(where[: round(share * len(where))])
    held = np.sort(np.concatenate(validation)) if validation else np.zeros(0, np.int64)
    mask = np.ones(len(y), bool)
    mask[held] = False
    return np.flatnonzero(mask), held


def percentiles(scores: np.ndarray) -> dict[str, float]:
    """p1..p99 of the finite scores: thresholds belong to one trained model, so the table travels with it."""
    finite = np.asarray(scores, np.float64)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return {}
    qs = [1, 5, 10, 25, 50, 75, 90, 95, 99]
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(finite, qs), strict=True)}


def warnings_for(metrics: dict[str, Any], counts: dict[str, int]) -> list[str]:
    """§15.6: warn when the AUC is below 0.75 or a class has fewer than 50 labels."""
    found = []
    auc = metrics.get("roc_auc")
    if auc is not None and auc < 0.75:
        found.append(f"validation ROC-AUC is {auc:.3f} (< 0.75): the classifier barely separates its labels")
    found += [f"label {k!r} has only {v} rows (< 50)" for k, v in counts.items() if v < 50 and k != "unparsed"]
    return found

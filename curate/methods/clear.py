"""CLEAR's confidence arithmetic (docs/methods.md §2.2-2.4), independent of any model.

- `observed_consistency(similarity, match, alpha)`: O = mean_j(alpha * s_j + (1 - alpha) * r_j) over the k samples.
- `reflection_certainty(logp)`: P(True) from the option letters (A Correct, B Incorrect, C not sure), renormalised:
  S = p(A) + 0.5 p(C).
- `confidence(O, S, beta)`: C = beta * O + (1 - beta) * S.
- `rank_normalised(values)`: a row's rank within the dataset in [0, 1] (the likelihood confidence is compared
  within the dataset, not by its absolute value, §2.4).
- `rouge_l(a, b)`: ROUGE-L F1 over white-space tokens (the cheap stand-in for NLI agreement).
- `judge_preference(logp_ab, logp_ba)`: the judge's probability that the new response is better, in each order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def observed_consistency(similarity: np.ndarray, match: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """Rows x k arrays of s_j and r_j -> O per row (NaN where a row has no samples)."""
    o = alpha * np.asarray(similarity, np.float64) + (1 - alpha) * np.asarray(match, np.float64)
    with np.errstate(invalid="ignore"):
        return o.mean(axis=1) if o.shape[1] else np.full(o.shape[0], np.nan)


def softmax_rows(logp: np.ndarray) -> np.ndarray:
    logp = np.asarray(logp, np.float64)
    top = np.max(logp, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.exp(logp - top)
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)


def reflection_certainty(logp: np.ndarray) -> np.ndarray:
    """Rows x 3 log-probabilities of the letters A (correct), B (incorrect), C (not sure) -> S per row."""
    p = softmax_rows(logp)
    return p[:, 0] + 0.5 * p[:, 2]


def confidence(observed: np.ndarray, reflection: np.ndarray, beta: float = 0.7) -> np.ndarray:
    return beta * np.asarray(observed, np.float64) + (1 - beta) * np.asarray(reflection, np.float64)


def rank_normalised(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties share their mean rank); NaN stays NaN."""
    from scipy.stats import rankdata  # scipy.stats costs ~1 s to import: not at stage registration
    values = np.asarray(values, np.float64)
    out = np.full(len(values), np.nan)
    finite = np.isfinite(values)
    if finite.sum() == 1:
        out[finite] = 1.0
    elif finite.any():
        out[finite] = (rankdata(values[finite]) - 1) / (finite.sum() - 1)
    return out


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts over lower-cased white-space tokens (longest common subsequence)."""
    x, y = a.lower().split(), b.lower().split()
    if not x or not y:
        return float(x == y)
    previous = [0] * (len(y) + 1)
    for token in x:
        current = [0]
        for j, other in enumerate(y):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(x), lcs / len(y)
    return 2 * precision * recall / (precision + recall)


def judge_preference(logp_new_second: np.ndarray, logp_new_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows x 2 log-probabilities of the verdict letters (A, B), asked with the old response as A and the new as B,
    then the other way round -> P(new is better) in each order."""
    first = softmax_rows(logp_new_second)[:, 1]  # new response shown as B
    second = softmax_rows(logp_new_first)[:, 0]  # new response shown as A
    return first, second


def drop_mask(conf: np.ndarray, threshold: float | None, drop_fraction: float | None) -> np.ndarray:
    """Rows to drop: below `threshold`, or the floor(q * N) lowest (ties: lower position first)."""
    conf = np.asarray(conf, np.float64)
    scored = np.where(np.isfinite(conf), conf, -np.inf)
    if drop_fraction is not None:
        k = int(np.floor(drop_fraction * len(conf)))
        order = np.lexsort((np.arange(len(conf)), scored))
        mask = np.zeros(len(conf), bool)
        mask[order[:k]] = True
        return mask
    return scored < (threshold if threshold is not None else -np.inf)


def answers_agree(a: Sequence[str | None], b: Sequence[str | None]) -> np.ndarray:
    """r_j: final answers equal after normalising (numbers by value), else normalised strings equal."""
    from curate.methods.math_check import extract_answer, numbers_match

    out = []
    for x, y in zip(a, b, strict=True):
        ax, ay = extract_answer(x), extract_answer(y)
        if ax is None or ay is None:
            out.append(float(" ".join((x or "").lower().split()) == " ".join((y or "").lower().split())))
            continue
        quick = numbers_match(ax, ay)
        out.append(float(quick if quick is not None else ax.strip().lower() == ay.strip().lower()))
    return np.array(out, np.float64)

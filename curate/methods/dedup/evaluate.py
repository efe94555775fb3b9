"""Measuring dedup quality: synthetic near-duplicates with known originals, and exact similar pairs.

- `inject_near_duplicates`: copies of chosen texts with a fraction of their words replaced.
- `similar_pairs`: every pair of texts whose shingle sets have Jaccard >= t, found exactly (prefix
  filtering: pairs that can reach t must share one of the rarest shingles of each set), no MinHash.
- `pair_recall`: how many (copy, original) pairs a dedup result resolved, and its precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate.methods.dedup.lsh import _ranges, exact_pair_jaccard, set_pair_jaccard
from curate.methods.dedup.minhash import shingle_sets, shingles


@dataclass
class Injected:
    """Copies of `original` texts (indices into the input) with about `rate` of their words replaced."""

    texts: list[str]
    original: np.ndarray  # int64
    rate: np.ndarray  # float64, the edit rate asked for
    changed: np.ndarray  # int64, the number of words replaced


def edit_words(text: str, rate: float, vocabulary: list[str], rng: np.random.Generator) -> tuple[str, int]:
    """Replace round(rate · words) words (at least one) by random vocabulary words; words joined by " "."""
    words = text.split()
    if not words:
        return text + " x", 0
    k = min(len(words), max(1, round(rate * len(words))))
    for pos in rng.choice(len(words), size=k, replace=False).tolist():
        words[pos] = vocabulary[int(rng.integers(len(vocabulary)))]
    return " ".join(words), k


def inject_near_duplicates(texts: list[str], fraction: float, rates: list[float], seed: int = 0,
                           min_words: int = 0) -> Injected:
    """Copies of a random `fraction` of texts (each original at most once, among texts with at least
    `min_words` words), edit rates taken in turn from `rates`."""
    rng = np.random.default_rng(seed)
    lengths = np.array([len(t.split()) for t in texts])
    eligible = np.flatnonzero(lengths >= max(min_words, 1))
    count = min(len(eligible), round(fraction * len(texts)))
    original = np.sort(rng.choice(eligible, size=count, replace=False))
    vocabulary = sorted({w for i in rng.choice(len(texts), min(len(texts), 2000), replace=False)
                         for w in texts[i].split()})
    rate = np.array([rates[i % len(rates)] for i in range(count)], np.float64)
    rng.shuffle(rate)
    edited = [edit_words(texts[o], r, vocabulary, rng) for o, r in zip(original.tolist(), rate, strict=True)]
    return Injected([e[0] for e in edited], original.astype(np.int64), rate,
                    np.array([e[1] for e in edited], np.int64))


def similar_pairs(texts: pa.Array | list[str], threshold: float = 0.5,
                  ngram: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) whose word n-gram shingle sets have Jaccard >= threshold, with their Jaccard."""
    texts = pa.array(texts, pa.string()) if isinstance(texts, list) else texts
    n = len(texts)
    hashes, docs = shingles(texts, ngram)
    h, offsets = shingle_sets(hashes, docs, n)
    sizes = np.diff(offsets)
    doc = np.repeat(np.arange(n), sizes)
    unique, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    rank = np.empty(len(unique), np.int64)
    rank[np.lexsort((unique, counts))] = np.arange(len(unique))  # rarest shingles first
    token = rank[inverse.ravel()]
    order = np.lexsort((token, doc))
    token, doc = token[order], doc[order]
    position = np.arange(len(doc)) - np.repeat(offsets[:-1], sizes)
    prefix = sizes - np.ceil(threshold * sizes - 1e-9).astype(np.int64) + 1
    keep = position < prefix[doc]
    token, doc = token[keep], doc[keep]
    order = np.lexsort((doc, token))
    token, doc = token[order], doc[order]
    partners = np.searchsorted(token, token, side="right") - np.arange(len(token)) - 1
    left = np.repeat(doc, partners)
    right = doc[_ranges(np.arange(len(doc)) + 1, partners)]
    pairs = np.unique(left * max(n, 1) + right)
    left, right = pairs // max(n, 1), pairs % max(n, 1)
    small, large = np.minimum(sizes[left], sizes[right]), np.maximum(sizes[left], sizes[right])
    possible = small >= threshold * large - 1e-9
    left, right = left[possible], right[possible]
    jaccard = set_pair_jaccard(h, offsets, left, right)
    found = jaccard >= threshold
    return left[found], right[found], jaccard[found]


def pair_jaccard(texts_a: list[str], texts_b: list[str], ngram: int = 5) -> np.ndarray:
    """Exact shingle Jaccard of texts_a[i] with texts_b[i]."""
    n = len(texts_a)
    both = pa.array(list(texts_a) + list(texts_b), pa.string())
    return exact_pair_jaccard(both, np.arange(n), np.arange(n) + n, ngram)


def pair_recall(removed: np.ndarray, copy: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Per (copy, original) pair: resolved = at least one of the two was removed (bool array)."""
    return removed[copy] | removed[original]


def precision(removed: np.ndarray, copy: np.ndarray, original: np.ndarray) -> float:
    """Share of removed rows that resolve an injected pair (one removal per pair counts)."""
    useful = int((removed[copy] | removed[original]).sum())
    total = int(removed.sum())
    return useful / total if total else 1.0

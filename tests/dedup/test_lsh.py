"""LSH banding, verification and clustering."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.methods.dedup import lsh
from curate.methods.dedup.evaluate import similar_pairs
from curate.methods.dedup.lsh import (
    bucket_anchors,
    candidate_pairs,
    connected_representatives,
    exact_pair_jaccard,
    lsh_clusters,
    set_pair_jaccard,
)
from curate.methods.dedup.minhash import EMPTY, MinHashParams, minhash_signatures


def _reference_anchors(band: np.ndarray) -> np.ndarray:
    seen: dict[tuple, int] = {}
    return np.array([seen.setdefault(tuple(row), i) for i, row in enumerate(band.tolist())])


def test_bucket_anchors_exact_grouping():
    rng = np.random.default_rng(0)
    band = rng.integers(0, 3, (500, 4)).astype(np.uint64)  # many equal bands
    assert np.array_equal(bucket_anchors(band), _reference_anchors(band))


def test_bucket_anchors_key_collisions_fall_back(monkeypatch):
    monkeypatch.setattr(lsh, "_MIX", np.uint64(0))  # key = last column only: different bands collide
    rng = np.random.default_rng(1)
    band = rng.integers(0, 3, (300, 3)).astype(np.uint64)
    assert np.array_equal(bucket_anchors(band), _reference_anchors(band))


def test_candidate_pairs_star_to_lowest_and_skip_empty():
    sig = np.array([[1, 2, 3, 4], [9, 9, 3, 4], [1, 2, 7, 7], [EMPTY] * 4, [EMPTY] * 4, [5, 5, 3, 4]],
                   np.uint64)
    left, right = candidate_pairs(sig, bands=2, rows=2)
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == [(0, 1), (0, 2), (0, 5)]


def test_connected_representatives_transitive():
    rep = connected_representatives(6, np.array([3, 1, 4]), np.array([4, 3, 5]))
    assert rep.tolist() == [0, 1, 2, 1, 1, 1]
    assert connected_representatives(3, np.array([], np.int64), np.array([], np.int64)).tolist() == [0, 1, 2]


def test_set_pair_jaccard():
    sets = [[1, 2, 3, 4], [3, 4, 5], [], [1, 2, 3, 4]]
    offsets = np.cumsum([0] + [len(s) for s in sets])
    hashes = np.array([v for s in sets for v in s], np.uint64)
    got = set_pair_jaccard(hashes, offsets, np.array([0, 0, 0, 1]), np.array([1, 2, 3, 1]), chunk=3)
    assert got.tolist() == pytest.approx([2 / 5, 0.0, 1.0, 1.0])


def _words(n: int, seed: int) -> list[str]:
    """Random letter words (digits would all normalise to "0")."""
    rng = np.random.default_rng(seed)
    return ["".join(chr(97 + c) for c in rng.integers(0, 26, 6)) for _ in range(n)]


def _variants(base: str, n: int, rate: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    fresh = iter(_words(n * len(base.split()), seed + 100))
    words = base.split()
    out = []
    for _ in range(n):
        w = list(words)
        for pos in rng.choice(len(w), max(1, int(rate * len(w))), replace=False):
            w[pos] = next(fresh)
        out.append(" ".join(w))
    return out


BASE = " ".join(_words(200, 0))


def test_lsh_clusters_keep_lowest_and_verify_modes():
    other = " ".join(_words(200, 1))
    texts = [other, BASE, *_variants(BASE, 3, 0.01, 0), *_variants(BASE, 1, 0.02, 1)]
    j = exact_pair_jaccard(pa.array(texts), np.ones(5, np.int64), np.arange(1, 6))
    assert j[1:4].min() > 0.9 and 0.75 < j[4] < 0.9
    sig = minhash_signatures(texts)
    rep = lsh_clusters(sig)
    assert rep.tolist() == [0, 1, 1, 1, 1, 1]
    strict = MinHashParams(verify="exact", threshold=0.9)
    assert lsh_clusters(sig, strict, texts=pa.array(texts)).tolist() == [0, 1, 1, 1, 1, 5]
    calls = []

    def fetch(rows: np.ndarray) -> pa.Array:
        calls.append(rows.tolist())
        return pa.array([texts[i] for i in rows])

    assert lsh_clusters(sig, strict, texts=fetch).tolist() == [0, 1, 1, 1, 1, 5]
    assert calls == [[1, 2, 3, 4, 5]]  # only candidate documents are fetched
    signature = MinHashParams(verify="signature", threshold=0.95)
    assert lsh_clusters(sig, signature)[5] == 5
    with pytest.raises(ValueError, match="texts"):
        lsh_clusters(sig, strict)


def test_similar_pairs_exact():
    texts = [BASE, *_variants(BASE, 2, 0.02, 3), " ".join(_words(50, 2)), "tiny"]
    left, right, jaccard = similar_pairs(texts, 0.5)
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert jaccard.min() > 0.6


@pytest.mark.parametrize("verify", ["none", "signature"])
def test_band_keys_give_the_clusters_of_the_signatures(data_dir, verify):
    """The decision of a run holds one 64-bit key per band, not the signatures: on real texts with planted near
    copies, the clusters are those of the signatures, and signatures are read only for candidate rows."""
    import json

    from curate.methods.dedup.evaluate import inject_near_duplicates

    rows = [json.loads(line) for line in (data_dir / "dedup_pool_mixed_long.jsonl").open(encoding="utf-8")]
    base = [r["text"] for r in rows]
    texts = base + inject_near_duplicates(base, 0.5, [0.01, 0.05, 0.2], seed=3).texts
    params = MinHashParams(verify=verify, threshold=0.7)
    sig = minhash_signatures(texts, params)
    asked: list[np.ndarray] = []

    def signatures(rows_asked: np.ndarray) -> np.ndarray:
        asked.append(rows_asked)
        return sig[rows_asked]

    keys = lsh.band_keys(sig, params.bands, params.rows)
    got = lsh.key_clusters(keys, params, signatures)
    assert np.array_equal(got, lsh_clusters(sig, params))
    assert (got != np.arange(len(texts))).sum() >= 12  # most of the 45 planted copies at 1% and 5% edits
    read = np.unique(np.concatenate(asked)) if asked else np.zeros(0)
    assert (verify == "none") == (len(read) == 0) and len(read) < len(texts)

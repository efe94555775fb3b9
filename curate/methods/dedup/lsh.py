"""LSH banding, optional verification and clustering of MinHash signatures (docs/methods.md §7.2).

- Banding: rows whose band values are identical fall in one bucket (exact grouping: sorted by a 64-bit
  key, with a byte-wise fallback if two different bands share a key). Each bucket is star-connected to its
  lowest-index member (the anchor).
- Verification (optional): an edge is kept only if the member's estimated or exact Jaccard with the
  anchor is >= threshold.
- Clustering: connected components of the kept edges; the lowest-index member of a component is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from curate.methods.dedup.minhash import MinHashParams, has_signature, shingle_sets, shingles, signature_jaccard

_MIX = np.uint64(0x9E3779B97F4A7C15)

TextSource = Callable[[np.ndarray], pa.Array]  # texts of rows by index (for exact verification)


def bucket_anchors(band: np.ndarray) -> np.ndarray:
    """For each row of a band (n, rows), the lowest row index whose band is identical (itself if none)."""
    n = len(band)
    if n == 0:
        return np.zeros(0, np.int64)
    band = np.ascontiguousarray(band)
    key = _fold(band)
    order = np.argsort(key, kind="stable")  # stable: equal keys stay in index order
    sorted_band = band[order]
    same_key = key[order][1:] == key[order][:-1]
    same_band = (sorted_band[1:] == sorted_band[:-1]).all(axis=1)
    if np.any(same_key & ~same_band):  # two different bands share a key: group byte-wise instead
        view = band.view(np.dtype((np.void, band.dtype.itemsize * band.shape[1]))).ravel()
        _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
        return first[inverse.ravel()].astype(np.int64)
    group = np.concatenate([[0], np.cumsum(~same_key)])
    starts = np.flatnonzero(np.concatenate([[True], ~same_key]))
    anchors = np.empty(n, np.int64)
    anchors[order] = order[starts][group]
    return anchors


def _fold(band: np.ndarray) -> np.ndarray:
    """A 64-bit key per row of a band (n, rows): its values folded in order."""
    key = band[:, 0].astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(1, band.shape[1]):
            key = (key ^ (key >> np.uint64(29))) * _MIX + band[:, j].astype(np.uint64)
    return key


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per band (n, bands) uint64: what the decision of a large run holds in memory instead of the
    signatures (112 bytes per document at 14 bands, against 448 or 896), equal bands giving equal keys."""
    out = np.empty((len(signatures), bands), np.uint64)
    for b in range(bands):
        out[:, b] = _fold(signatures[:, b * rows:(b + 1) * rows])
    return out


def key_candidate_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star edges (anchor, member) of rows with an equal band key in some band, deduplicated; anchor < member.

    Two different bands share a 64-bit key with probability about n^2 / 2^65 per band (3e-6 at 10M documents),
    the price of not holding the signatures; `verify` checks candidates against them."""
    n = len(keys)
    found = []
    for b in range(keys.shape[1]):
        anchors = bucket_anchors(keys[:, b:b + 1])
        member = np.flatnonzero(anchors != np.arange(n))
        found.append(anchors[member] * n + member)
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    unique = np.unique(np.concatenate(found))
    return unique // max(n, 1), unique % max(n, 1)


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Star edges (anchor, member) of every band's buckets, deduplicated; anchor < member.

    Rows without a signature (`EMPTY`) are never paired.
    """
    n = len(signatures)
    valid = np.flatnonzero(has_signature(signatures))
    keys = []
    for b in range(bands):
        anchors = bucket_anchors(signatures[valid, b * rows:(b + 1) * rows])
        member = np.flatnonzero(anchors != np.arange(len(valid)))
        keys.append(valid[anchors[member]] * n + valid[member])
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    unique = np.unique(np.concatenate(keys))
    return unique // max(n, 1), unique % max(n, 1)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(starts - before, lengths) + np.arange(total)


def set_pair_jaccard(hashes: np.ndarray, offsets: np.ndarray, left: np.ndarray, right: np.ndarray,
                     chunk: int = 1 << 22) -> np.ndarray:
    """Exact Jaccard of pairs of sets; set i is hashes[offsets[i]:offsets[i+1]] (distinct values)."""
    sizes = np.diff(offsets)
    out = np.zeros(len(left), np.float64)
    cost = np.cumsum(sizes[left] + sizes[right])
    start = 0
    while start < len(left):  # pairs in chunks of about `chunk` set elements
        stop = max(int(np.searchsorted(cost, (cost[start - 1] if start else 0) + chunk)), start + 1)
        lo, ro = left[start:stop], right[start:stop]
        nl, nr = sizes[lo], sizes[ro]
        pair = np.concatenate([np.repeat(np.arange(len(lo)), nl), np.repeat(np.arange(len(ro)), nr)])
        value = hashes[np.concatenate([_ranges(offsets[lo], nl), _ranges(offsets[ro], nr)])]
        order = np.lexsort((value, pair))
        pair, value = pair[order], value[order]
        both = (pair[1:] == pair[:-1]) & (value[1:] == value[:-1])
        inter = np.bincount(pair[1:][both], minlength=len(lo))
        union = nl + nr - inter
        out[start:stop] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        start = stop
    return out


def exact_pair_jaccard(texts: pa.Array, left: np.ndarray, right: np.ndarray, ngram: int = 5) -> np.ndarray:
    """Exact Jaccard of the shingle sets of text pairs (indices into `texts`)."""
    hashes, docs = shingles(texts, ngram)
    h, offsets = shingle_sets(hashes, docs, len(texts))
    return set_pair_jaccard(h, offsets, np.asarray(left, np.int64), np.asarray(right, np.int64))


SignatureSource = Callable[[np.ndarray], np.ndarray]  # signatures of rows by index


def pair_signature_jaccard(signatures: np.ndarray | SignatureSource, left: np.ndarray,
                           right: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of row pairs, from all signatures or from a function giving those of some rows."""
    if not callable(signatures):
        return signature_jaccard(signatures, left, right)
    nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    return signature_jaccard(signatures(nodes), inverse[: len(left)], inverse[len(left):])


def _verify(signatures: np.ndarray | SignatureSource, params: MinHashParams, left: np.ndarray, right: np.ndarray,
            texts: pa.Array | TextSource | None) -> np.ndarray:
    if params.verify == "signature":
        return pair_signature_jaccard(signatures, left, right) >= params.threshold
    if texts is None:
        raise ValueError("verify='exact' needs the texts (an array or a function of row indices)")
    nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    node_texts = texts(nodes) if callable(texts) else texts.take(pa.array(nodes, pa.int64()))
    local_l, local_r = inverse[: len(left)], inverse[len(left):]
    return exact_pair_jaccard(node_texts, local_l, local_r, params.ngram) >= params.threshold


def connected_representatives(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """For each of n nodes, the lowest node index of its connected component (union-find result)."""
    if len(left) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix  # here: scipy loads when rows are clustered, not when a config is read
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    return first[labels].astype(np.int64)


def lsh_clusters(signatures: np.ndarray, params: MinHashParams | None = None,
                 texts: pa.Array | TextSource | None = None) -> np.ndarray:
    """Cluster ids of MinHash signatures: for each row, the lowest row index of its near-duplicate cluster.

    A row is kept when its id equals its own index. `texts` (all texts, or a function returning the
    texts of given row indices) is needed only for verify="exact".
    """
    params = params or MinHashParams()
    if signatures.shape[1] != params.num_perm:
        raise ValueError(f"signatures have {signatures.shape[1]} values, params need {params.num_perm}")
    left, right = candidate_pairs(signatures, params.bands, params.rows)
    return _clusters(len(signatures), left, right, params, signatures, texts)


def key_clusters(keys: np.ndarray, params: MinHashParams, signatures: SignatureSource,
                 texts: pa.Array | TextSource | None = None) -> np.ndarray:
    """`lsh_clusters` from band keys (`band_keys`) of rows that all have a signature; `signatures` gives the
    signatures of candidate rows when `verify` is "signature"."""
    left, right = key_candidate_pairs(keys)
    return _clusters(len(keys), left, right, params, signatures, texts)


def _clusters(n: int, left: np.ndarray, right: np.ndarray, params: MinHashParams,
              signatures: np.ndarray | SignatureSource, texts: pa.Array | TextSource | None) -> np.ndarray:
    if params.verify != "none" and len(left):
        keep = _verify(signatures, params, left, right, texts)
        left, right = left[keep], right[keep]
    return connected_representatives(n, left, right)

"""Stage `semdedup`: SemDeDup, semantic near-duplicate removal inside k-means clusters (docs/methods.md §7.1).

Method (global stage):
1. L2-normalise the `embedding` column and cluster it with spherical FAISS k-means (`clusters` K,
   clamped to the number of rows; `niter`, `seed`, `init`, `max_points_per_centroid`: see `curate.methods.kmeans`).
2. Order each cluster by distance to its centroid (1 - cosine): `order: hard` farthest first (default),
   `easy` nearest first, `random` a shuffle drawn from `seed`. Ties break by `id`.
3. For item j of a cluster, M_j = max over earlier items i < j of cos(e_i, e_j), with its argmax.
   `mode: reference` (default, the original semantics): remove j if M_j > 1 - `eps`, even when the
   earlier item was itself removed, so chains remove more than "keep one per component" would.
   `mode: greedy`: compare only against earlier items that were kept.
4. Removed rows: reason `semantic_duplicate`, score = that cosine, details `duplicate_of` = the id of
   the most similar earlier item (the earliest one on ties) and `n_clusters` (the K used).
   Rows with a null embedding are dropped with reason `missing_embedding`.

Parameters (defaults, as NeMo Curator): clusters 1000, niter 100, seed 1234, eps 0.01 (cos > 0.99),
order "hard", mode "reference", block 1024, init "kmeans++" (NeMo's cuML k-means seeds with k-means++;
"random" is FAISS's default, as the original repo), max_points_per_centroid 256, nredo 1.

Memory: similarities are computed per cluster in `block` x `block` tiles (column blocks, and row blocks
over the earlier items), never as an n_c x n_c matrix, so the working set is O(block² + n_c·d) even
for a huge cluster. Cost is O(Σ_c n_c² d), about N² d / K for balanced clusters.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from threadpoolctl import threadpool_limits

from curate.data.embedding import EMBEDDING, HoldsEmbeddings, check_embedding_type, embedding_matrix
from curate.methods.kmeans import l2_normalize
from curate.stages.base import GlobalStage, Rows, register
from curate.stages.clustering import KMeansParams
from curate.stages.decision import Decision

log = logging.getLogger("curate")

Mode = Literal["reference", "greedy"]
_REASONS = pa.array([None, "semantic_duplicate", "missing_embedding"], pa.string())


class SemDedupParams(KMeansParams):
    """SemDeDup settings (k-means defaults as NeMo Curator's); see the module docstring."""
    eps: float = Field(0.01, ge=0, le=2)
    order: Literal["hard", "easy", "random"] = "hard"
    mode: Mode = "reference"
    block: int = Field(1024, ge=1)


def within_cluster_order(clusters: np.ndarray, distances: np.ndarray, id_rank: np.ndarray, order: str,
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """Row indices sorted by cluster, then by the `order` key (hard/easy/random), then by id rank."""
    if order == "hard":
        key = -distances.astype(np.float64)
    elif order == "easy":
        key = distances.astype(np.float64)
    elif order == "random":
        if rng is None:
            raise ValueError("order 'random' needs an rng")
        key = rng.random(len(clusters))
    else:
        raise ValueError(f"order must be hard, easy or random, got {order!r}")
    return np.lexsort((id_rank, key, clusters))


def _update(best: np.ndarray, arg: np.ndarray, sims: np.ndarray, row0: int) -> None:
    """Fold a (rows, cols) tile into the running column max; strict '>' keeps the earliest row on ties."""
    m = sims.max(axis=0)
    better = m > best
    best[better] = m[better]
    arg[better] = sims.argmax(axis=0)[better] + row0


def earlier_duplicates(e: np.ndarray, eps: float, mode: Mode = "reference",
                       block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ordered unit rows `e` of one cluster: (removed mask, index of the most similar earlier item
    or -1, that cosine or -inf). `reference` compares with every earlier item, `greedy` with kept ones.

    Works in block x block tiles: memory O(block²), never n x n.
    """
    n = len(e)
    threshold = np.float64(1.0 - eps)
    best = np.full(n, -np.inf)
    arg = np.full(n, -1, np.int64)
    removed = np.zeros(n, bool)
    for c0 in range(0, n, block):
        c1 = min(c0 + block, n)
        cols = e[c0:c1]
        b_best, b_arg = best[c0:c1], arg[c0:c1]  # views: _update writes through
        for r0 in range(0, c0, block):  # earlier blocks: every row is before every column
            sims = e[r0:r0 + block] @ cols.T
            if mode == "greedy":
                sims[removed[r0:r0 + block]] = -np.inf
            _update(b_best, b_arg, sims, r0)
        diag = cols @ cols.T
        diag[np.tri(c1 - c0, dtype=bool)] = -np.inf  # only i < j counts (the diagonal is i == j)
        if mode == "reference":
            _update(b_best, b_arg, diag, c0)
            removed[c0:c1] = b_best > threshold
            continue
        gone = _greedy_block(diag > threshold, b_best > threshold)
        removed[c0:c1] = gone
        diag[gone] = -np.inf  # the match reported is the most similar *kept* earlier item
        _update(b_best, b_arg, diag, c0)
    return removed, arg, best


def _greedy_block(adjacent: np.ndarray, known_dup: np.ndarray) -> np.ndarray:
    """Greedy keep-then-compare inside one block, without a loop per row.

    `adjacent[i, j]` (i < j): a near-duplicate pair; `known_dup`: already matched by a kept item of an
    earlier block. Fixed point: j is removed once an earlier kept neighbour exists, kept once every
    earlier neighbour is removed. Each round settles at least the earliest open item; near-duplicate
    groups are small, so a few rounds suffice.
    """
    n = len(known_dup)
    removed = known_dup.copy()
    kept = np.zeros(n, bool)
    while not (settled := removed | kept).all():
        removed |= ~settled & adjacent[kept].any(axis=0)
        open_ = ~(removed | kept)
        kept |= open_ & ~adjacent[~removed].any(axis=0)
    return removed


def semdedup(x: np.ndarray, ids: pa.Array, params: SemDedupParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """SemDeDup over unit rows `x`: (removed mask, matched row or -1, its cosine, K used), rows in input order."""
    p = params
    n = len(x)
    result = p.fit(x, spherical=True)
    id_rank = np.empty(n, np.int64)
    id_rank[pc.sort_indices(ids).to_numpy()] = np.arange(n)
    rng = np.random.default_rng(p.seed) if p.order == "random" else None
    perm = within_cluster_order(result.assignment, result.distances, id_rank, p.order, rng)
    bounds = np.searchsorted(result.assignment[perm], np.arange(result.k + 1))
    removed = np.zeros(n, bool)
    match = np.full(n, -1, np.int64)
    score = np.full(n, np.nan)
    sizes = np.diff(bounds)
    work = np.flatnonzero(sizes > 1)
    work = work[np.argsort(-sizes[work], kind="stable")]  # biggest first: the threads finish together

    def scan(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = perm[bounds[c]:bounds[c + 1]]
        return rows, *earlier_duplicates(x[rows], p.eps, p.mode, p.block)

    # Clusters are independent: scan them on a thread per core (numpy's GEMM releases the GIL) with
    # single-threaded BLAS. Multi-threaded BLAS on these small tiles, right after FAISS's OpenMP threads,
    # spent 16 s instead of 0.4 s on 1000 clusters of ~100 rows (2 cores); the results are the same.
    with _single_threaded_blas(), ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, len(work)))) as pool:
        for rows, gone, arg, best in pool.map(scan, work):  # a loop over clusters (K), not rows
            removed[rows] = gone
            match[rows[gone]] = rows[arg[gone]]
            score[rows[gone]] = best[gone]
    return removed, match, score, result.k


def _single_threaded_blas() -> AbstractContextManager:
    """Limit BLAS to one thread while in the block."""
    return threadpool_limits(limits=1, user_api="blas")


@register
class SemDedup(HoldsEmbeddings, GlobalStage):
    name = "semdedup"
    Params = SemDedupParams
    needs = ("id", EMBEDDING)
    adds = ()

    def check_input(self, schema: pa.Schema) -> None:
        """The needed columns exist and embeddings are float lists."""
        super().check_input(schema)
        check_embedding_type(self.name, schema)

    def decide(self, summary: pa.Table, rows: Rows) -> Decision:
        n = summary.num_rows
        ids = summary.column("id").combine_chunks() if n else pa.array([], pa.string())
        x, valid = embedding_matrix(summary.column(EMBEDDING), summary.column("id"))
        live = np.flatnonzero(valid)
        x = l2_normalize(x if len(live) == n else x[live])  # cosine = dot product of unit rows
        removed_live, match_live, score_live, k = semdedup(x, ids.take(pa.array(live)), self.params)
        del x
        removed = np.zeros(n, bool)
        removed[live] = removed_live
        match = np.full(n, -1, np.int64)
        match[live[removed_live]] = live[match_live[removed_live]]
        score = np.full(n, np.nan)
        score[live] = score_live
        log.info("%s: K=%d (asked %d) on %d rows, removed %d", self.name, k, self.params.clusters, len(live),
                 int(removed.sum()))
        reason = np.where(valid, np.where(removed, 1, 0), 2).astype(np.int8)
        keep = reason == 0
        return Decision(
            reason=_REASONS.take(pa.array(reason)),
            score=pa.array(score, pa.float64(), mask=~removed),
            details={"duplicate_of": ids.take(pa.array(match, pa.int64(), mask=~removed)),
                     "n_clusters": pa.array(np.full(n, k, np.int32), pa.int32(), mask=keep)},
        )

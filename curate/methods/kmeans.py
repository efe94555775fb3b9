"""k-means with FAISS (docs/methods.md §0.4): a thin wrapper shared by `kmeans_diversity` and `semdedup`.

`kmeans(x, k, niter=25, nredo=1, seed=1234, spherical=False, init="kmeans++",
max_points_per_centroid=256)` trains centroids with `faiss.Kmeans` and assigns every row to its
nearest centroid.

- Input: an (n, d) array; converted once to C-contiguous float32 (FAISS accepts nothing else).
- `k` is clamped to `n` (FAISS refuses fewer points than centroids), with a logged warning.
- `spherical`: rows are L2-normalised first and the centroids are normalised after each update;
  assignment is by largest cosine and the distance returned is `1 - cosine`. Otherwise the metric is
  L2 and the distance is the *squared* L2 distance (FAISS's convention). Both order rows the same way
  as the true distance, which is all the callers use them for.
- Training subsample: when `n > k * max_points_per_centroid`, FAISS trains on a random subsample of
  `k * max_points_per_centroid` rows (drawn with `seed`); every row is still assigned to the trained
  centroids. FAISS's default is 256; raise it to train on more rows (slower), or pass `None` to train on all.
- `nredo`: FAISS runs the whole clustering `nredo` times from different initialisations and keeps the
  centroids with the lowest objective.
- `init`: "random" (FAISS's default: k distinct training rows at random, as the kMQ and SemDeDup
  repos use it), "kmeans++" (D²-weighted seeding, as NeMo Curator's cuML k-means) or "afkmc2" (an
  MCMC approximation of k-means++). Random seeding routinely merges small clusters and splits big ones
  when cluster sizes are imbalanced (the §4.9 blobs fail with it for every seed we tried), so our stages
  default to "kmeans++". Its cost (FAISS 1.15, 2 cores, k=1000, d=384): ~7 s on 20k training rows,
  ~27 s on 256k (the subsample of any n >= 256k), i.e. about 8 Lloyd iterations, small next to the
  100-300 iterations the methods use; "afkmc2" takes ~1.3 s and also passes the blobs test with nredo 5.

Results are deterministic for a given input, parameters and seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

log = logging.getLogger("curate")

Init = Literal["random", "kmeans++", "afkmc2"]


@dataclass(frozen=True)
class KMeansResult:
    """Centroids (k, d) float32, assignment (n,) int64, distances (n,) float32, objective, and k used."""

    centroids: np.ndarray
    assignment: np.ndarray
    distances: np.ndarray
    objective: float
    k: int


def as_float32_rows(x: np.ndarray) -> np.ndarray:
    """`x` as a C-contiguous float32 (n, d) array (no copy when it already is one)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) array, got shape {x.shape}")
    return x


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero. Already-unit rows are returned
    as they are (no copy: embeddings arrive normalised, and a copy of 1M x 1024 floats is 4 GB)."""
    x = as_float32_rows(x)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # no (n, d) temporary, unlike linalg.norm
    if np.all(np.abs(norms - 1.0) <= 1e-6):
        return x
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def clamp_k(k: int, n: int) -> int:
    """`k` limited to the number of points `n` (at least 1), warning when it had to change."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        log.warning("k-means: only %d points for k=%d clusters; using k=%d", n, k, max(n, 1))
    return max(1, min(k, n))


def assign(x: np.ndarray, centroids: np.ndarray, spherical: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row and its distance (squared L2, or 1 - cosine when spherical)."""
    import faiss

    x, centroids = as_float32_rows(x), as_float32_rows(centroids)
    index = faiss.IndexFlatIP(x.shape[1]) if spherical else faiss.IndexFlatL2(x.shape[1])
    index.add(centroids)
    dist, nearest = index.search(x, 1)
    dist, nearest = dist[:, 0], nearest[:, 0].astype(np.int64)
    return ((1.0 - dist) if spherical else dist).astype(np.float32), nearest


def kmeans(x: np.ndarray, k: int, *, niter: int = 25, nredo: int = 1, seed: int = 1234, spherical: bool = False,
           init: Init = "kmeans++", max_points_per_centroid: int | None = 256) -> KMeansResult:
    """Cluster the rows of `x` into min(k, n) clusters with FAISS; see the module docstring."""
    import faiss

    x = l2_normalize(x) if spherical else as_float32_rows(x)
    n, d = x.shape
    if n == 0:
        return KMeansResult(np.zeros((0, d), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), 0.0, 0)
    k = clamp_k(k, n)
    methods = {"random": faiss.ClusteringInitMethod_RANDOM, "kmeans++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
               "afkmc2": faiss.ClusteringInitMethod_AFK_MC2}
    if init not in methods:
        raise ValueError(f"init must be one of {sorted(methods)}, got {init!r}")
    km = faiss.Kmeans(
        d, k, niter=niter, nredo=nredo, seed=seed, spherical=spherical, verbose=False,
        init_method=methods[init],
        # FAISS subsamples the training set to k * max_points_per_centroid rows; a huge cap = no subsample
        max_points_per_centroid=max_points_per_centroid or 2**30,
        # only used to print a "please provide more points" warning to stderr; we log our own
        min_points_per_centroid=1,
    )
    objective = float(km.train(x))
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    distances, assignment = assign(x, centroids, spherical)
    return KMeansResult(centroids, assignment, distances, objective, k)

"""k-means settings shared by the stages that cluster embeddings (`kmeans_diversity`, `semdedup`)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from curate.methods.kmeans import Init, KMeansResult, kmeans
from curate.stages.base import Params


class KMeansParams(Params):
    """FAISS k-means (see `curate.methods.kmeans`): K, Lloyd iterations, restarts, seed, seeding, training subsample.

    Defaults are SemDeDup's (NeMo Curator); stages override them with their method's values.
    """

    clusters: int = Field(1000, ge=1)
    niter: int = Field(100, ge=1)
    nredo: int = Field(1, ge=1)
    seed: int = 1234
    init: Init = "kmeans++"
    max_points_per_centroid: int | None = Field(256, ge=1)

    def fit(self, x: np.ndarray, spherical: bool) -> KMeansResult:
        """Cluster the rows of `x` with these settings."""
        return kmeans(x, self.clusters, niter=self.niter, nredo=self.nredo, seed=self.seed, spherical=spherical,
                      init=self.init, max_points_per_centroid=self.max_points_per_centroid)

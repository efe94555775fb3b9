"""The FAISS k-means wrapper: known clusters, distances, spherical mode, k clamping, dtypes, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from curate.methods.kmeans import assign, clamp_k, kmeans, l2_normalize

BLOBS = (1000, 500, 200, 100, 50, 50, 50, 50)


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """§4.9: 8 well-separated 2-D Gaussian blobs of very different sizes, and the true blob of each point."""
    rng = np.random.default_rng(seed)
    angles = np.arange(8) * 2 * np.pi / 8
    centres = np.c_[np.cos(angles), np.sin(angles)] * 50
    x = np.concatenate([rng.normal(c, 1.0, (s, 2)) for c, s in zip(centres, BLOBS, strict=True)])
    return x.astype(np.float32), np.repeat(np.arange(8), BLOBS)


def test_recovers_imbalanced_blobs_and_reports_squared_l2():
    x, truth = blobs()
    result = kmeans(x, 8, niter=300, nredo=5, seed=3)
    assert result.k == 8 and result.centroids.shape == (8, 2) and result.assignment.dtype == np.int64
    for b in range(8):  # every blob is exactly one cluster
        assert len(np.unique(result.assignment[truth == b])) == 1
    assert len(np.unique(result.assignment)) == 8
    brute = ((x[:, None, :] - result.centroids[None]) ** 2).sum(-1)
    assert (result.assignment == brute.argmin(1)).all()
    assert np.allclose(result.distances, brute.min(1), rtol=1e-4, atol=1e-3)
    again = kmeans(x, 8, niter=300, nredo=5, seed=3)  # deterministic for a seed
    assert (again.assignment == result.assignment).all() and np.array_equal(again.centroids, result.centroids)


def test_spherical_normalises_and_returns_cosine_distance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 16)) * rng.uniform(0.5, 3, (600, 1))  # not unit length, float64
    result = kmeans(x, 5, niter=20, spherical=True, seed=1)
    assert np.allclose(np.linalg.norm(result.centroids, axis=1), 1, atol=1e-5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = unit @ result.centroids.T
    assert (result.assignment == cos.argmax(1)).all()
    assert np.allclose(result.distances, 1 - cos.max(1), atol=1e-5)


def test_k_is_clamped_to_n_with_a_warning(caplog):
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float16)  # float16 accepted
    with caplog.at_level(logging.WARNING, logger="curate"):
        result = kmeans(x, 1000, niter=5)
    assert result.k == 6 and result.centroids.shape == (6, 4) and set(result.assignment) <= set(range(6))
    assert "k=1000" in caplog.text and "using k=6" in caplog.text
    assert clamp_k(3, 10) == 3 and clamp_k(30, 10) == 10
    with pytest.raises(ValueError):
        clamp_k(0, 10)
    empty = kmeans(np.zeros((0, 4)), 10)
    assert empty.k == 0 and empty.assignment.shape == (0,)


def test_training_subsample_and_input_layouts():
    x, truth = blobs(1)
    wide = np.asfortranarray(np.c_[x, np.zeros(len(x), np.float32)].astype(np.float64))[:, :2]  # strided
    capped = kmeans(wide, 8, niter=50, nredo=2, seed=0, max_points_per_centroid=20)  # trains on 160 rows
    full = kmeans(wide, 8, niter=50, nredo=2, seed=0, max_points_per_centroid=None)
    for result in (capped, full):
        assert len(result.assignment) == len(x)  # every row is assigned, subsample or not
        assert all(len(np.unique(result.assignment[truth == b])) == 1 for b in range(8))
    assert not np.array_equal(capped.centroids, full.centroids)
    with pytest.raises(ValueError):
        kmeans(x, 8, init="nope")


def test_helpers():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(l2_normalize(x), [[0.6, 0.8], [0, 0]])
    unit = l2_normalize(np.eye(3, dtype=np.float32))
    assert l2_normalize(unit) is unit  # already unit rows: no copy
    dist, nearest = assign(np.array([[0.0, 1.0], [5.0, 5.0]]), np.array([[0.0, 0.0], [4.0, 4.0]]))
    assert nearest.tolist() == [0, 1] and np.allclose(dist, [1.0, 2.0])

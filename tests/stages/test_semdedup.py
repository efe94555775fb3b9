"""The `semdedup` stage: the §7.1 known answer, reference vs greedy chains, blocked = naive, the runner."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest

from curate.data.arrays import matrix_to_column
from curate.data.dataset import Dataset
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.methods.kmeans import kmeans
from curate.stages.base import REGISTRY, MapStage, Params, register
from curate.stages.decision import Decision
from curate.stages.semdedup import SemDedup, SemDedupParams, earlier_duplicates, within_cluster_order


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def groups_of_copies(n_groups: int = 100, copies: int = 4, d: int = 64, noise: float = 0.005, seed: int = 0):
    """§7.1: random unit vectors, each with perturbed copies (within-group cosine > 0.995)."""
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=(n_groups, d)))
    x = unit(np.repeat(base, copies, axis=0) + rng.normal(size=(n_groups * copies, d)) * noise)
    return x.astype(np.float32), np.repeat(np.arange(n_groups), copies)


def test_params_defaults_and_registry():
    assert REGISTRY["semdedup"] is SemDedup and SemDedup.needs == ("id", "embedding")
    p = SemDedupParams()
    assert (p.clusters, p.niter, p.seed, p.eps, p.order, p.mode, p.block) == (1000, 100, 1234, 0.01, "hard",
                                                                             "reference", 1024)
    for bad in ({"order": "soft"}, {"mode": "union"}, {"block": 0}, {"eps": -0.1}):
        with pytest.raises(ValueError):
            SemDedupParams.model_validate(bad)


@pytest.mark.parametrize("order", ["hard", "easy"])
def test_known_answer_one_kept_per_group(order):
    x, group = groups_of_copies()
    gram = x @ x.T
    same = group[:, None] == group[None, :]
    assert gram[same].min() > 0.995 and gram[~same].max() < 0.5
    ids = [f"g{g:03d}-{i}" for g, i in zip(group, np.tile(np.arange(4), 100), strict=True)]
    table = pa.table({"id": ids, "embedding": matrix_to_column(x)})
    kept, rejected = SemDedup(clusters=10, eps=0.01, order=order)(table)
    assert kept.num_rows == 100 and rejected.num_rows == 300
    kept_ids = kept.column("id").to_pylist()
    assert sorted(i[:4] for i in kept_ids) == sorted({i[:4] for i in ids})  # one per group
    assert set(rejected.column("reason").to_pylist()) == {"semantic_duplicate"}
    assert all(d[:4] == i[:4] for i, d in zip(rejected.column("id").to_pylist(),
                                              rejected.column("duplicate_of").to_pylist(), strict=True))
    assert min(rejected.column("score").to_pylist()) > 0.99 and set(rejected.column("n_clusters").to_pylist()) == {10}
    # the kept member is the one farthest from (hard) / nearest to (easy) its centroid
    km = kmeans(x, 10, niter=100, seed=1234, spherical=True)
    for g in range(100):
        members = np.flatnonzero(group == g)
        assert len(np.unique(km.assignment[members])) == 1
        pick = members[np.argmax(km.distances[members]) if order == "hard" else np.argmin(km.distances[members])]
        assert ids[pick] in kept_ids


def chain() -> pa.Table:
    """d (far away), then a, b, c with cos(a,b) = cos(b,c) = cos 7° = 0.9925 > 0.99 and cos(a,c) = cos 14° < 0.99.

    With one cluster the centroid sits near 20°, so the hard order (farthest first) is d, a, b, c.
    """
    degrees = np.array([60.0, 0.0, 7.0, 14.0])
    x = np.c_[np.cos(np.radians(degrees)), np.sin(np.radians(degrees))].astype(np.float32)
    return pa.table({"id": ["d", "a", "b", "c"], "embedding": matrix_to_column(x)})


def test_chain_reference_removes_more_than_greedy():
    reference_kept, reference = SemDedup(clusters=1)(chain())
    assert reference_kept.column("id").to_pylist() == ["d", "a"]
    got = {r["id"]: (r["duplicate_of"], round(r["score"], 4)) for r in reference.to_pylist()}
    assert got == {"b": ("a", round(np.cos(np.radians(7)), 4)), "c": ("b", round(np.cos(np.radians(7)), 4))}
    greedy_kept, greedy = SemDedup(clusters=1, mode="greedy")(chain())
    assert greedy_kept.column("id").to_pylist() == ["d", "a", "c"]  # c only resembles the removed b
    assert greedy.column("duplicate_of").to_pylist() == ["a"]
    loose_kept, _ = SemDedup(clusters=1, eps=0.05)(chain())  # cos 14° = 0.970 > 0.95: a absorbs both
    assert loose_kept.column("id").to_pylist() == ["d", "a"]


def _naive(e: np.ndarray, eps: float, mode: str):
    """Full-matrix reference: M_j = max_{i<j} S_ij; greedy compares with kept items one row at a time."""
    s = (e @ e.T).astype(np.float64)
    n = len(e)
    removed = np.zeros(n, bool)
    arg = np.full(n, -1)
    best = np.full(n, -np.inf)
    for j in range(1, n):
        earlier = s[:j, j].copy()
        if mode == "greedy":
            earlier[removed[:j]] = -np.inf
        arg[j], best[j] = int(np.argmax(earlier)), earlier.max()
        removed[j] = best[j] > 1 - eps
    return removed, arg, best


@pytest.mark.parametrize("mode", ["reference", "greedy"])
def test_blocked_equals_the_full_matrix(mode):
    rng = np.random.default_rng(5)
    x, _ = groups_of_copies(40, 5, d=16, noise=0.02, seed=3)  # noisier: some pairs straddle the threshold
    chain_steps = unit(np.cumsum(rng.normal(size=(30, 16)) * 0.03, axis=0) + rng.normal(size=16))
    e = np.concatenate([x, chain_steps.astype(np.float32)])[rng.permutation(230)]
    want = _naive(e, 0.01, mode)
    assert 20 < want[0].sum() < 200
    for block in (1, 2, 7, 64, 1024):
        removed, arg, best = earlier_duplicates(e, 0.01, mode, block)
        assert (removed == want[0]).all(), block
        assert (arg[removed] == want[1][removed]).all() and np.allclose(best[removed], want[2][removed], atol=1e-6)
        assert not np.isfinite(best[0]) and arg[0] == -1


def test_random_order_is_seeded_and_ties_break_by_id():
    clusters = np.array([1, 0, 1, 0, 0])
    distances = np.array([0.5, 0.2, 0.5, 0.2, 0.9], np.float32)
    id_rank = np.array([4, 3, 2, 1, 0])
    assert within_cluster_order(clusters, distances, id_rank, "hard").tolist() == [4, 3, 1, 2, 0]
    assert within_cluster_order(clusters, distances, id_rank, "easy").tolist() == [3, 1, 4, 2, 0]
    x, _ = groups_of_copies(30, 4)
    table = pa.table({"id": [f"r{i}" for i in range(120)], "embedding": matrix_to_column(x)})
    runs = [SemDedup(clusters=3, order="random", seed=s)(table)[0].column("id").to_pylist() for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2] and len(runs[0]) == len(runs[2]) == 30


def test_float16_missing_embeddings_and_tiny_inputs():
    x, _ = groups_of_copies(5, 2, d=8)
    emb = matrix_to_column(x.astype(np.float16))
    values = emb.to_pylist()
    values[3] = None
    table = pa.table({"id": [f"r{i}" for i in range(10)], "embedding": pa.array(values, emb.type)})
    kept, rejected = SemDedup(clusters=2)(table)
    reasons = dict(zip(rejected.column("id").to_pylist(), rejected.column("reason").to_pylist(), strict=True))
    assert reasons.pop("r3") == "missing_embedding"
    assert len(reasons) == 4 and set(reasons.values()) == {"semantic_duplicate"} and kept.num_rows == 5
    # K=1000 is clamped to the 9 rows: one row per cluster, so nothing can be found (the accepted trade-off)
    kept, rejected = SemDedup()(table)
    assert kept.num_rows == 9 and rejected.column("n_clusters").to_pylist() == [9]
    one, none = SemDedup()(table.slice(0, 1))
    assert one.num_rows == 1 and none.num_rows == 0


# ------------------------------------------------------------------ through the runner

class CopyEmbedParams(Params):
    dim: int = 32


class CopyEmbed(MapStage):
    """Test-only: text "group G copy C" -> base vector of group G plus a small copy-specific offset."""

    name = "test_copy_embed"
    Params = CopyEmbedParams
    adds = ("embedding",)

    def process(self, table: pa.Table) -> Decision:
        found = [re.match(r"group (\d+) copy (\d+)", t).groups() for t in table.column("text").to_pylist()]
        group, copy = np.array(found, np.int64).T
        j = np.arange(self.params.dim)
        base = np.sin(group[:, None] * 1.37 * (j + 1) + j)  # deterministic, groups far apart
        offset = 0.01 * np.cos(copy[:, None] * 2.1 * (j + 3))
        return Decision(adds={"embedding": matrix_to_column(unit(base + offset).astype(np.float32))})


if CopyEmbed.name not in REGISTRY:
    register(CopyEmbed)

COPIES = [1, 3, 2, 1, 4, 1, 2, 3, 1, 1, 2, 1]


def _run(tmp_path, name, shard_rows, workers, params):
    config = parse_config({"name": name, "inputs": [{"path": "in.jsonl"}], "output": name,
                           "engine": {"prefect": False, "shard_rows": shard_rows, "workers": workers},
                           "stages": [{"test_copy_embed": {}}, {"semdedup": params}]}, base_dir=tmp_path)
    result = run_pipeline(config)[-1]
    folder = tmp_path / name
    return (result, Dataset.open(folder / "stages" / "02-semdedup").to_table(),
            Dataset.open(folder / "rejected" / "02-semdedup").to_table())


def test_runner_rejects_copies_with_duplicate_of_and_is_deterministic(tmp_path):
    rows = [{"id": f"g{g}c{c}", "text": f"group {g} copy {c}"} for g, n in enumerate(COPIES) for c in range(n)]
    rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {"clusters": 4, "block": 2}
    result, kept, rejected = _run(tmp_path, "small", 7, 1, params)
    assert result.rows_in == sum(COPIES) == result.rows_out + result.rows_rejected
    assert result.reasons == {"semantic_duplicate": sum(COPIES) - len(COPIES)}
    assert sorted(i.split("c")[0] for i in kept.column("id").to_pylist()) == sorted(f"g{g}" for g in
                                                                                     range(len(COPIES)))
    for row in rejected.to_pylist():
        assert row["duplicate_of"].split("c")[0] == row["id"].split("c")[0] and row["score"] > 0.99
        assert row["stage"] == "semdedup" and row["embedding"] is not None
    for name, shard_rows, workers in (("big", 1000, 2), ("tiny", 3, 2)):
        _, kept2, rejected2 = _run(tmp_path, name, shard_rows, workers, params)
        assert sorted(kept2.column("id").to_pylist()) == sorted(kept.column("id").to_pylist())
        pairs = lambda t: sorted(zip(t.column("id").to_pylist(), t.column("duplicate_of").to_pylist(),  # noqa: E731
                                     strict=True))
        assert pairs(rejected2) == pairs(rejected)

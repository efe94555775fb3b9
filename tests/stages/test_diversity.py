"""The `kmeans_diversity` (kMQ) stage: §4.9 known answers, params, and runs through the runner."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest

from curate.data.arrays import matrix_to_column
from curate.data.dataset import Dataset
from curate.data.embedding import embedding_matrix
from curate.data.errors import CurateError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.stages.base import REGISTRY, MapStage, Params, register
from curate.stages.decision import Decision
from curate.stages.diversity import KMeansDiversity, KMeansDiversityParams

BLOBS = (1000, 500, 200, 100, 50, 50, 50, 50)
ANGLES = np.arange(8) * 2 * np.pi / 8
CENTRES = np.c_[np.cos(ANGLES), np.sin(ANGLES)] * 50
FAST: dict = {}  # the kMQ defaults (niter 300, nredo 5): fast on 2k points; nredo=1 can merge small blobs


def blob_table(dtype=np.float32, seed: int = 0) -> pa.Table:
    """§4.9 blobs as rows: id, embedding (2-D), blob, and q = 5 for every other member of a blob, else 0."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 1.0, (s, 2)) for c, s in zip(CENTRES, BLOBS, strict=True)])
    blob = np.repeat(np.arange(8), BLOBS)
    q = np.concatenate([np.arange(s) % 2 * 5.0 for s in BLOBS])
    return pa.table({"id": [f"r{i}" for i in range(len(x))], "embedding": matrix_to_column(x.astype(dtype)),
                     "blob": blob, "q": q})


def picked_blobs(kept: pa.Table) -> list[int]:
    return np.bincount(kept.column("blob").to_numpy(), minlength=8).tolist()


def test_params_and_needs():
    assert REGISTRY["kmeans_diversity"] is KMeansDiversity and KMeansDiversity.kind == "global"
    p = KMeansDiversityParams(fraction=0.1)
    assert (p.clusters, p.niter, p.nredo, p.quota, p.redistribute, p.temperature, p.quality) == (
        1024, 300, 5, "equal", False, 1.0, None)
    for bad in ({}, {"fraction": 0.1, "count": 5}, {"fraction": 1.5}, {"count": 3, "quota": "random"},
                {"count": 3, "clusters": 2, "cluster_weights": [1.0]}, {"count": 3, "clusters": 2,
                                                                       "cluster_weights": [1.0, -1.0]},
                {"count": 3, "temperature": 0}):
        with pytest.raises(ValueError):
            KMeansDiversityParams.model_validate(bad)
    assert KMeansDiversity(count=3).needs == ("id", "embedding")
    assert KMeansDiversity(count=3, quality="q").needs == ("id", "embedding", "q")
    table = blob_table()
    assert KMeansDiversity(count=3, quality="q").summarize(table).column_names == ["id", "embedding", "q"]
    with pytest.raises(CurateError, match="numeric"):
        KMeansDiversity(count=3, quality="id").check_input(table.schema)
    with pytest.raises(CurateError, match="needs column"):
        KMeansDiversity(count=3, quality="missing").check_input(table.schema)
    with pytest.raises(CurateError, match="float16/float32"):
        KMeansDiversity(count=3).check_input(pa.schema([("id", pa.string()), ("embedding", pa.string())]))


def test_equal_quotas_give_ten_per_blob_and_random_sampling_follows_size():
    """§4.9: K=8, B=80."""
    table = blob_table()
    kept, rejected = KMeansDiversity(clusters=8, count=80, **FAST)(table)
    assert picked_blobs(kept) == [10] * 8
    assert kept.num_rows + rejected.num_rows == table.num_rows
    assert set(rejected.column("reason").to_pylist()) == {"not_selected"}
    assert set(rejected.column("n_clusters").to_pylist()) == {8}
    clusters = np.concatenate([kept.column("cluster").to_numpy(), rejected.column("cluster").to_numpy()])
    assert sorted(np.unique(clusters).tolist()) == list(range(8))
    big = rejected.filter(pa.compute.equal(rejected.column("blob"), 0))  # the 1000-row blob
    assert set(big.column("cluster_size").to_pylist()) == {1000}
    assert set(big.column("cluster_quota").to_pylist()) == {10}
    # one cluster = uniform random sampling: picks ∝ blob size (≈ 39 of 80 from the first blob)
    uniform, _ = KMeansDiversity(clusters=1, count=80, **FAST)(table)
    assert picked_blobs(uniform)[0] >= 25 and sum(picked_blobs(uniform)) == 80
    proportional, _ = KMeansDiversity(clusters=8, count=80, quota="proportional", **FAST)(table)
    assert picked_blobs(proportional) == [40, 20, 8, 4, 2, 2, 2, 2]  # floor(80 · size / 2000)
    fair, _ = KMeansDiversity(clusters=8, count=80, quota="proportional", redistribute=True, **FAST)(table)
    assert sum(picked_blobs(fair)) == 80
    shortfall, _ = KMeansDiversity(clusters=8, count=800, **FAST)(table)  # quota 100: small blobs give 50
    assert picked_blobs(shortfall) == [100] * 4 + [50] * 4
    filled, _ = KMeansDiversity(clusters=8, count=800, redistribute=True, **FAST)(table)
    # water-filling: 4 x 50 + 100 + 3 x 166.7 (the extra 2 rows go to the lower cluster labels)
    assert sorted(picked_blobs(filled)) == [50] * 4 + [100, 166, 167, 167]


def test_fraction_and_count_agree_and_float16_is_accepted():
    table = blob_table()
    by_count, _ = KMeansDiversity(clusters=8, count=80, seed=5, **FAST)(table)
    by_fraction, _ = KMeansDiversity(clusters=8, fraction=0.0435, seed=5, **FAST)(table)  # floor(87) // 8 = 10
    assert by_count.column("id").equals(by_fraction.column("id"))
    half, _ = KMeansDiversity(clusters=8, count=80, seed=5, **FAST)(blob_table(np.float16))
    assert picked_blobs(half) == [10] * 8


def test_quality_picks_high_quality_items():
    """§4.9: quota 1 per blob, half q=5, half q=0: P(high) = 0.9933 (many seeds: test_selection)."""
    table = blob_table()
    high = total = 0
    for seed in range(25):
        kept, _ = KMeansDiversity(clusters=8, count=8, quality="q", seed=seed, **FAST)(table)
        assert picked_blobs(kept) == [1] * 8
        high += int((kept.column("q").to_numpy() == 5).sum())
        total += kept.num_rows
    assert high / total >= 0.97
    cold = sum(int((KMeansDiversity(clusters=8, count=8, quality="q", temperature=1000, seed=s, **FAST)(table)[0]
                    .column("q").to_numpy() == 5).sum()) for s in range(25))
    assert cold / total < 0.8  # a high temperature flattens the preference towards uniform
    z, rejected = KMeansDiversity(clusters=8, count=8, quality="q", quality_scale="zscore", **FAST)(table)
    assert z.num_rows == 8 and set(rejected.column("score").to_pylist()) == {0.0, 5.0}


def test_cluster_weights_replace_the_quota():
    table = blob_table()
    labels = KMeansDiversity(clusters=8, count=0, **FAST)(table)[1].column("cluster").to_numpy()
    w = [0.0] * 8
    w[3] = 1.0  # every label drawn is cluster 3
    kept, _ = KMeansDiversity(clusters=8, count=80, cluster_weights=w, **FAST)(table)
    size3 = int((labels == 3).sum())
    assert kept.num_rows == min(80, size3) and set(kept.column("cluster").to_pylist()) == {3}
    even = [1.0] * 8  # uniform weights: about 10 per cluster, capped by size
    kept, _ = KMeansDiversity(clusters=8, count=80, cluster_weights=even, **FAST)(table)
    assert 60 <= kept.num_rows <= 80 and len(set(kept.column("cluster").to_pylist())) == 8
    with pytest.raises(CurateError, match="cluster_weights"):
        KMeansDiversity(clusters=8, count=3, cluster_weights=even, **FAST)(table.slice(0, 5))


def test_missing_embeddings_and_small_inputs():
    table = blob_table().slice(1000, 60)
    emb = table.column("embedding").combine_chunks()
    holes = pa.array([None if i % 10 == 0 else v for i, v in enumerate(emb.to_pylist())], emb.type)
    table = table.set_column(1, "embedding", holes)
    kept, rejected = KMeansDiversity(clusters=1000, count=30, **FAST)(table)  # K clamped to 54
    reasons = dict(zip(rejected.column("id").to_pylist(), rejected.column("reason").to_pylist(), strict=True))
    assert all(reasons[f"r{1000 + i}"] == "missing_embedding" for i in range(0, 60, 10))
    missing = rejected.filter(pa.compute.equal(rejected.column("reason"), "missing_embedding"))
    assert missing.column("cluster").null_count == 6 and kept.column("cluster").null_count == 0
    assert set(rejected.column("n_clusters").drop_null().to_pylist()) == {54}
    x, valid = embedding_matrix(holes)
    assert x.shape == (60, 2) and valid.sum() == 54 and (x[~valid] == 0).all()
    chunked = embedding_matrix(pa.chunked_array([holes.slice(0, 25), holes.slice(25)]))  # filled chunk by chunk
    assert np.array_equal(chunked[0], x) and np.array_equal(chunked[1], valid)
    ragged = pa.array([[1.0, 2.0], [3.0, 4.0, 5.0]], pa.list_(pa.float32()))
    with pytest.raises(CurateError, match=r"column .embedding.: 1 row\(s\) have 3 values where 1 rows have 2"):
        embedding_matrix(ragged)
    assert embedding_matrix(pa.array([[1.0, 2.0], None], pa.list_(pa.float16())))[0].dtype == np.float32


# ------------------------------------------------------------------ through the runner

class BlobEmbedParams(Params):
    dtype: str = "float32"


class BlobEmbed(MapStage):
    """Test-only: text "blob B item I" -> a deterministic 2-D point in blob B, and q = I % 3."""

    name = "test_blob_embed"
    Params = BlobEmbedParams
    adds = ("embedding", "q")

    def process(self, table: pa.Table) -> Decision:
        found = [re.match(r"blob (\d+) item (\d+)", t).groups() for t in table.column("text").to_pylist()]
        blob, item = np.array(found, np.int64).T
        noise = np.c_[np.sin(item * 12.9898), np.cos(item * 78.233)]  # deterministic, in [-1, 1]
        x = (CENTRES[blob] + noise).astype(self.params.dtype)
        return Decision(adds={"embedding": matrix_to_column(x), "q": pa.array(item % 3, pa.int64())})


if BlobEmbed.name not in REGISTRY:
    register(BlobEmbed)

SIZES = (40, 20, 10, 10)


def _write(path) -> None:
    rows = [{"id": f"b{b}-{i}", "text": f"blob {b} item {i}"} for b, s in enumerate(SIZES) for i in range(s)]
    order = np.random.default_rng(0).permutation(len(rows))
    path.write_text("".join(json.dumps(rows[i]) + "\n" for i in order))


def _run(tmp_path, name, shard_rows, workers, params, dtype="float32"):
    config = parse_config({"name": name, "inputs": [{"path": "in.jsonl"}], "output": name,
                           "engine": {"prefect": False, "shard_rows": shard_rows, "workers": workers},
                           "stages": [{"test_blob_embed": {"dtype": dtype}}, {"kmeans_diversity": params}]},
                          base_dir=tmp_path)
    result = run_pipeline(config)[-1]
    kept = Dataset.open(tmp_path / name / "stages" / "02-kmeans_diversity").to_table()
    rejected = Dataset.open(tmp_path / name / "rejected" / "02-kmeans_diversity").to_table()
    return result, kept, rejected


@pytest.mark.parametrize("quality", [None, "q"])
def test_runner_counts_columns_and_determinism(tmp_path, quality):
    _write(tmp_path / "in.jsonl")
    params = {"clusters": 4, "fraction": 0.2, "seed": 7, "quality": quality, **FAST}  # B = 16: 4 per blob
    result, kept, rejected = _run(tmp_path, "small", 7, 1, params)
    assert result.rows_in == result.rows_out + result.rows_rejected == sum(SIZES) == kept.num_rows + rejected.num_rows
    assert result.reasons == {"not_selected": sum(SIZES) - 16}
    assert kept.schema.field("cluster").type == pa.int32() and kept.column("cluster").null_count == 0
    assert rejected.column("cluster").null_count == 0 and set(rejected.column("stage").to_pylist()) == {
        "kmeans_diversity"}
    blobs = [int(i[1]) for i in kept.column("id").to_pylist()]
    assert np.bincount(blobs).tolist() == [4, 4, 4, 4]
    ids = sorted(kept.column("id").to_pylist())
    for name, shard_rows, workers, dtype in (("big", 1000, 2, "float32"), ("half", 3, 2, "float16")):
        _, kept2, _ = _run(tmp_path, name, shard_rows, workers, params, dtype)
        assert sorted(kept2.column("id").to_pylist()) == ids
    if quality:  # q = item % 3 in {0, 1, 2}: the picks lean to q = 2
        assert kept.column("q").to_numpy().mean() > rejected.column("q").to_numpy().mean()
    _, other, _ = _run(tmp_path, "seed", 7, 1, {**params, "seed": 8})
    assert sorted(other.column("id").to_pylist()) != ids

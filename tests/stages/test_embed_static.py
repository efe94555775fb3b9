"""The `embed` stage with `model: static`: the stage's vectors, its cache, its parameters, and SemDeDup, kMQ and GOT-D
on static embeddings through `curate run`.

The static MiniLM comes from the test session's cache (distilled there once, tests/models/test_static_embed.py);
tests that count embedding-cache hits use their own cache folder that links to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from curate.data.arrays import column_to_matrix
from curate.data.dataset import Dataset, side_path
from curate.stages.embed import Embed
from tests.cli_runner import curate
from tests.lm_fixtures import read_records
from tests.models.test_static_embed import QUESTIONS, minilm_static  # noqa: F401 (a fixture)


def rows(texts: list[str]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})


def vectors(table: pa.Table, dim: int = 256) -> np.ndarray:
    return column_to_matrix(table.column("embedding"), dim, np.float32)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm_static) -> Path:  # noqa: F811
    """An empty embedding cache, with the session's distilled static models linked in."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "static").symlink_to(Path(os.environ["CURATE_CACHE_DIR"]) / "static", target_is_directory=True)
    monkeypatch.setenv("CURATE_CACHE_DIR", str(folder))
    return folder


def test_stage_embeds_with_the_static_model_and_caches_the_vectors(cache_dir, minilm_static,  # noqa: F811
                                                                   monkeypatch):
    table = rows([*QUESTIONS[:6], "   "])
    stage = Embed(model="static", device="cpu")
    kept, rejected = stage(table)
    assert kept.schema.field("embedding").type == pa.list_(pa.float32(), 256)
    assert rejected.column("reason").to_pylist() == ["empty_text"]
    np.testing.assert_array_equal(vectors(kept), minilm_static.encode(QUESTIONS[:6]))
    assert str(stage.cache.path).startswith(str(cache_dir)) and "static" in stage.cache.describe()["model"]
    again = Embed(model="static", device="cpu", dtype="float16")
    again.ensure_setup()
    monkeypatch.setattr(again.embedder.model, "encode", lambda texts: pytest.fail("encoded again"))
    half, _ = again(table)
    assert again.counts == {"rows": 6, "cached": 6, "embedded": 0}
    assert half.schema.field("embedding").type == pa.list_(pa.float16(), 256)
    np.testing.assert_allclose(vectors(half), vectors(kept), atol=1e-3)


def test_static_parameters(monkeypatch, tmp_path):
    for bad in ({"teacher": "default"}, {"dims": 64}, {"model": "static", "prompt_name": "query"},
                {"model": "static:"}, {"model": "static", "dims": 0}):
        with pytest.raises(ValueError):
            Embed(bad)
    assert Embed(model="static").models() == {}
    assert Embed(model="static", teacher="./my-model").models() == {"teacher": "./my-model"}
    assert Embed(model="static:./saved").models() == {"model": "./saved"}  # checked before any work
    monkeypatch.setattr("curate.stages.embed.cuda_available", lambda: True)
    assert Embed(model="static").resources.gpus == 0 and Embed().resources.gpus == 1  # static runs on the CPU
    identity = Embed(model="static").fingerprint_extra()
    assert identity["model"]["static"]["dims"] == 256 and identity["model"]["static"]["teacher"]["package"]
    assert Embed(model="static", dims=128).fingerprint_extra() != identity
    (tmp_path / "config.json").write_text("{}")  # a teacher folder: its content hash is part of the identity
    other = Embed(model="static", teacher=str(tmp_path)).fingerprint_extra()
    assert other != identity and "folder_sha256" in other["model"]["static"]["teacher"]


def test_semdedup_kmq_and_got_d_run_on_static_embeddings(tmp_path, cache_dir):
    """embed (static) -> semdedup -> kmeans_diversity -> got_d through `curate run` on real rows: 40 GSM8K
    problems, 40 web pages, 40 MBPP tasks, and upper-cased copies of 8 problems (an uncased tokenizer gives a copy
    the vector of its original, so SemDeDup must remove one of each pair); the target is 20 other GSM8K problems.
    The run's embedding cache starts empty (`cache_dir`), so the vectors are computed by this run."""
    math = [r["prompt"] for r in read_records("heuristics_gsm8k.jsonl")]
    web = [r["text"] for r in read_records("heuristics_c4_web_sample.jsonl")][:40]
    code = [r["text"] for r in read_records("heuristics_mbpp.jsonl")][:40]
    pool = [{"id": f"m{i:02d}", "text": t} for i, t in enumerate(math[:40])]
    pool += [{"id": f"w{i:02d}", "text": t} for i, t in enumerate(web)]
    pool += [{"id": f"c{i:02d}", "text": t} for i, t in enumerate(code)]
    pool += [{"id": f"u{i:02d}", "text": t.upper()} for i, t in enumerate(math[:8])]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (tmp_path / "target.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in math[40:60]))
    config = {"name": "static", "inputs": [{"path": "pool.jsonl"}], "target": {"path": "target.jsonl"},
              "output": "run", "stages": [
                  {"embed": {"model": "static"}},
                  {"semdedup": {"clusters": 3, "eps": 0.001}},
                  {"kmeans_diversity": {"clusters": 3, "niter": 20, "nredo": 1, "fraction": 0.5,
                                        "redistribute": True}},
                  {"got_d": {"budget": 20, "sinkhorn": {"epsilon": 0.05}}}]}
    (tmp_path / "static.yaml").write_text(yaml.safe_dump(config))
    curate("run", "static.yaml", "--no-prefect", "--no-report", cwd=tmp_path)
    stages = tmp_path / "run" / "stages"
    embedded = Dataset.open(stages / "01-embed").to_table()
    assert embedded.num_rows == 128 and embedded.schema.field("embedding").type.list_size == 256
    removed = Dataset.open(tmp_path / "run" / "rejected" / "02-semdedup").to_table()
    pairs = {frozenset((i[1:], d[1:])) for i, d in zip(removed.column("id").to_pylist(),
                                                     removed.column("duplicate_of").to_pylist(), strict=True)}
    assert pairs == {frozenset([f"{i:02d}"]) for i in range(8)}  # exactly one of each copy and its original
    diverse = Dataset.open(stages / "03-kmeans_diversity").to_table()
    assert diverse.num_rows == 60 and diverse.column("cluster").null_count == 0  # half of the 120 left
    assert len(set(diverse.column("cluster").to_pylist())) == 3
    chosen = Dataset.open(stages / "04-got_d").to_table().column("id").to_pylist()
    assert len(chosen) == 20 and sum(i[0] in "mu" for i in chosen) >= 15, chosen  # math, like the target
    report = json.loads(side_path(stages / "04-got_d", "sinkhorn.json").read_text())
    assert report["converged"]

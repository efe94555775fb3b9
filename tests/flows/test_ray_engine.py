"""The Ray engine on a real local cluster (2 CPUs, 127.0.0.1): the same run as the local engine, row for row, and
the same mixture bytes; the cluster it started is gone afterwards."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.data.dataset import Dataset
from curate.data.errors import ConfigError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline

ray = pytest.importorskip("ray")
DATA = Path(__file__).parents[1] / "data" / "ingest"
STAGES = [{"normalize": {}}, {"heuristics": {}}, {"dedup": {}},
          {"mixture": {"by": "domain", "weights": {"web": 1, "encyclopedia": 1, "code": 2, "biomedical": 1,
                                                   "literature": 1}, "rows": 80, "seed": 3}}]


def run(tmp_path: Path, name: str, engine: dict) -> Path:
    config = parse_config({
        "name": name, "inputs": [{"path": str(DATA / "pool_sample.jsonl")}, {"path": str(DATA / "gsm8k_sample.jsonl")}],
        "output": str(tmp_path / name), "stages": STAGES,
        "engine": {"prefect": False, "shard_rows": 16, **engine}}, base_dir=tmp_path)
    run_pipeline(config)
    return tmp_path / name


def rows(run_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for kind in ("stages", "rejected"):
        for folder in sorted(f for f in (run_dir / kind).iterdir() if not f.name.endswith(".meta")):
            table = Dataset.open(folder).to_table()
            out[f"{kind}/{folder.name}"] = sorted(table.to_pylist(), key=lambda r: (r["id"], str(r.get("reason"))))
    return out


def test_ray_runs_equal_the_local_engine_and_stop_their_cluster(tmp_path):
    local = run(tmp_path, "local", {"kind": "local"})
    on_ray = run(tmp_path, "ray", {"kind": "ray", "address": "local", "ray_cpus": 2})
    assert not ray.is_initialized()  # the cluster started for the run was shut down
    assert rows(on_ray) == rows(local)  # same ids, rows, reasons and scores
    mixture = sorted((local / "stages").glob("*-mixture"))[0].name
    for part in sorted((local / "stages" / mixture).glob("part-*.parquet")):
        assert (on_ray / "stages" / mixture / part.name).read_bytes() == part.read_bytes()
    assert pq.read_table(next((on_ray / "stages" / mixture).glob("part-*.parquet"))).num_rows > 0
    # ingest wrote several shards, so the map stages really fanned out over Ray tasks
    assert len(list((on_ray / "stages" / "00-ingest").glob("part-*.parquet"))) >= 4


def test_a_bad_address_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"engine.address.*local, auto, ray://host:port.*'nowhere'"):
        parse_config({"name": "x", "inputs": [{"path": str(DATA / "pool_sample.jsonl")}], "output": "o",
                      "engine": {"kind": "ray", "address": "nowhere"}}, base_dir=tmp_path)

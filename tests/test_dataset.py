"""The data contract: shards + manifest, atomic writes, shards conformed to the schema, random access."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.data.dataset import MANIFEST, Dataset
from curate.data.errors import DatasetError
from curate.data.hashing import file_sha256
from curate.data.shards import ShardWriter, conform_shards, write_shard


def test_write_then_open_round_trips_with_manifest(tmp_path):
    table = pa.table({"id": [f"r{i}" for i in range(25)], "text": [f"t {i}" for i in range(25)]})
    ds = Dataset.write(tmp_path / "d", table, shard_rows=10, fingerprint="fp", stage="s")
    assert ds.shard_names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    reopened = Dataset.open(tmp_path / "d")
    assert reopened.count() == 25 and reopened.fingerprint == "fp"
    assert reopened.to_table().equals(table)
    manifest = json.loads((tmp_path / "d.meta" / MANIFEST).read_text())
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ds.shard_names  # shards only
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 5]
    assert manifest["shards"][0]["sha256"] == file_sha256(str(tmp_path / "d" / "part-00000.parquet"))
    assert {"schema", "rows", "shards", "fingerprint", "parents", "stage", "config", "created", "version"} <= set(
        manifest)
    batches = list(reopened.iter_batches(columns=["id"], batch_rows=4))
    assert sum(b.num_rows for b in batches) == 25 and batches[0].column_names == ["id"]


def test_directory_without_manifest_is_incomplete(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetError, match="incomplete"):
        Dataset.open(tmp_path / "d")
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset.open(tmp_path / "missing")


def test_shard_appears_only_when_closed_and_abort_leaves_nothing(tmp_path):
    writer = ShardWriter(tmp_path, "part-00000.parquet")
    writer.write(pa.table({"a": [1, 2]}))
    assert not (tmp_path / "part-00000.parquet").exists()
    assert writer.close().rows == 2 and (tmp_path / "part-00000.parquet").exists()
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, "part-00001.parquet") as w:
        w.write(pa.table({"a": [1]}))
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.parquet"]


def test_take_reads_rows_by_global_position(tmp_path):
    table = pa.table({"id": [str(i) for i in range(30)], "v": list(range(30))})
    ds = Dataset.write(tmp_path / "d", table, shard_rows=7)
    assert ds.take([29, 0, 8, 7, 15], ["v"]).column("v").to_pylist() == [29, 0, 8, 7, 15]


def test_conform_shards_gives_every_shard_the_dataset_schema(tmp_path):
    first = write_shard(tmp_path, "part-0.parquet", pa.table({"n": [1, 2], "x": ["s", "t"], "m": [{"a": 1}, None]}))
    second = write_shard(tmp_path, "part-1.parquet", pa.table({"n": [1.5], "x": pa.array([None], pa.null())}))
    third = write_shard(tmp_path, "part-2.parquet", pa.table({"n": [2.5], "x": [7]}))
    shards = conform_shards(tmp_path, [first, second, third])
    assert all(s.sha256 != old.sha256 for s, old in zip(shards, [first, second, third], strict=True))
    assert [s.sha256 for s in shards] == [file_sha256(str(tmp_path / s.file)) for s in shards]
    schema = pa.schema([("n", pa.float64()), ("x", pa.string()), ("m", pa.struct([("a", pa.int64())]))])
    assert all(pq.read_schema(tmp_path / s.file).remove_metadata().equals(schema) for s in shards)
    assert pq.read_table(tmp_path / "part-2.parquet").to_pylist() == [{"n": 2.5, "x": "7", "m": None}]
    assert conform_shards(tmp_path, shards) == shards  # once conformed, nothing left to do

"""Every dataset folder of a run (kept, rejected, mixture, target, held-out) is a plain Parquet dataset: pyarrow,
polars, pandas, Hugging Face `datasets` and DuckDB, pointed at the folder, read exactly the step's rows. The manifest
and side files live in `<folder>.meta/`; runs written before (manifest and side files among the shards) still open."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pytest

from curate import open_run
from curate.data.dataset import LEGACY_MANIFEST, MANIFEST, META, Dataset, meta_dir
from curate.inspect.sql import query
from tests.cli_runner import curate


def dataset_folders(run: Path) -> list[Path]:
    folders = [f for kind in ("stages", "rejected") for f in sorted((run / kind).iterdir())
               if not f.name.endswith(META)]
    return [*folders, run / "target", run / "heldout"]


def read_column(folder: Path, column: str, cache: Path) -> dict[str, list]:
    """One column of a folder's rows, as each reader reads the folder. `datasets` cannot read a folder with no rows
    (it fails on an empty Parquet file and on no file alike), so it reads only folders with rows."""
    import datasets

    found = {
        "pyarrow": pads.dataset(folder).to_table(columns=[column]).column(column).to_pylist(),
        "polars": pl.scan_parquet(folder).select(column).collect()[column].to_list(),
        "pandas": [None if pd.isna(v) else v for v in pd.read_parquet(folder, columns=[column])[column].tolist()],
        "duckdb": [r[0] for r in duckdb.sql(f"SELECT {column} FROM read_parquet('{folder}/*.parquet')").fetchall()],
    }
    if Dataset.open(folder).count():
        found["datasets"] = datasets.load_dataset("parquet", data_dir=str(folder), split="train",
                                                  cache_dir=str(cache))[column]
    return found


def test_every_step_folder_reads_with_five_parquet_readers(demo_run, tmp_path):
    folders = dataset_folders(demo_run)
    assert {"stages", "rejected"} <= {f.parent.name for f in folders} and len(folders) > 20
    assert any(f.name.endswith("-mixture") for f in folders)
    for folder in folders:
        assert all(p.suffix == ".parquet" for p in folder.iterdir()), folder  # shards only
        dataset = Dataset.open(folder)
        column = "id" if "id" in dataset.schema.names else dataset.schema.names[0]  # an empty rejected folder
        want = Counter(dataset.to_table(columns=[column]).column(column).to_pylist())
        for reader, values in read_column(folder, column, tmp_path / "hf").items():
            assert Counter(values) == want, (reader, folder)
    # the side files are beside the folders: a decision's report, SQL tables
    mixture = next(f for f in folders if f.name.endswith("-mixture") and f.parent.name == "stages")
    assert (meta_dir(mixture) / MANIFEST).is_file() and (meta_dir(mixture) / "mixture.json").is_file()


def to_legacy_layout(run: Path) -> None:
    """A run as versions before the `.meta` folders wrote it: manifest and side files among the shards."""
    for meta in [p for p in run.rglob(f"*{META}") if p.is_dir()]:
        folder = meta.with_name(meta.name.removesuffix(META))
        for item in meta.iterdir():
            item.rename(folder / (LEGACY_MANIFEST if item.name == MANIFEST else item.name))
        meta.rmdir()


def test_runs_in_the_old_layout_still_open(demo_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(demo_run, old)
    to_legacy_layout(old)
    assert not list(old.rglob(f"*{META}")) and list(old.rglob(LEGACY_MANIFEST))
    run, new = open_run(old), open_run(demo_run)
    assert [(s.label, s.rows_kept) for s in run.steps] == [(s.label, s.rows_kept) for s in new.steps]
    assert run.mixture().report == new.mixture().report  # mixture.json among the shards
    reasons = "SELECT stage, reason, count(*) AS n FROM rejected GROUP BY ALL ORDER BY ALL"
    assert query(old, reasons).to_pylist() == query(demo_run, reasons).to_pylist()
    tables = "SELECT table_name FROM information_schema.tables ORDER BY 1"
    assert query(old, tables).to_pylist() == query(demo_run, tables).to_pylist()  # a decision's tables too
    shown = curate("sql", str(old), "SELECT count(*) AS n FROM final", "--format", "json", cwd=tmp_path)
    assert [json.loads(shown.stdout)] == query(demo_run, "SELECT count(*) AS n FROM final").to_pylist()


@pytest.mark.parametrize("rows", [0, 3])
def test_a_dataset_folder_with_no_rows_still_has_a_shard_with_its_schema(tmp_path, rows):
    import pyarrow as pa

    table = pa.table({"id": pa.array([str(i) for i in range(rows)], pa.string()),
                      "score": pa.array([float(i) for i in range(rows)], pa.float64())})
    Dataset.write(tmp_path / "d", table)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["part-00000.parquet"]
    assert pl.scan_parquet(tmp_path / "d").collect().schema == {"id": pl.String, "score": pl.Float64}
    assert len(pl.scan_parquet(tmp_path / "d").collect()) == rows == Dataset.open(tmp_path / "d").count()

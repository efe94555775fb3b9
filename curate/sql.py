"""SQL over a run directory with DuckDB.

Views: one per stage, named by its label (`ingest`, `heuristics`, `dedup`, ...); `<label>_all` (the
stage's kept and dropped rows together, with a boolean `kept`: "what is in cluster 17" is one query);
`final` (the last stage); `rejected` (every dropped row of every stage, columns unified by name);
`target` (when the config has one); `manifest` (one row per stage: rows in/out/rejected, seconds,
fingerprint).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from curate.dataset import Dataset
from curate.rundir import RunDir


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _files_sql(files: list[Path]) -> str:
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], union_by_name = true)"


def _add_view(con: duckdb.DuckDBPyConnection, name: str, datasets: list[Dataset]) -> None:
    files = [d.path / shard for d in datasets for shard in d.shard_names]
    if files:
        con.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS SELECT * FROM {_files_sql(files)}")
    else:  # an empty dataset still has its schema
        con.register(name, datasets[0].schema.empty_table() if datasets else pa.table({}))


def _add_all_view(con: duckdb.DuckDBPyConnection, name: str, kept: Dataset, rejected: Dataset | None) -> None:
    parts = [(kept, "true")] + ([(rejected, "false")] if rejected is not None else [])
    selects = [f"SELECT *, {flag} AS kept FROM {_files_sql([d.path / s for s in d.shard_names])}"
               for d, flag in parts if d.shard_names]
    if selects:
        con.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS " + " UNION ALL BY NAME ".join(selects))
    else:
        con.register(name, kept.schema.append(pa.field("kept", pa.bool_())).empty_table())


def _manifest_table(run: RunDir) -> pa.Table:
    rows = []
    for out in run.outputs():
        manifest = Dataset.open(out.kept).manifest
        stats = manifest.get("stats", {})
        rows.append({
            "index": out.index, "stage": out.label, "kind": manifest.get("config", {}).get("stage", out.label),
            "rows_in": stats.get("rows_in"), "rows_out": manifest["rows"],
            "rows_rejected": stats.get("rows_rejected"), "seconds": stats.get("seconds"),
            "shards": len(manifest["shards"]), "fingerprint": manifest["fingerprint"],
            "created": manifest["created"],
        })
    return pa.Table.from_pylist(rows) if rows else pa.table({"index": pa.array([], pa.int64())})


def connect(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views."""
    run = RunDir.open(run_dir)
    con = duckdb.connect()
    outputs = run.outputs()
    for out in outputs:
        kept = Dataset.open(out.kept)
        _add_view(con, out.label, [kept])
        rejected = Dataset.open(out.rejected) if Dataset.exists(out.rejected) else None
        _add_all_view(con, f"{out.label}_all", kept, rejected)
    if outputs:
        _add_view(con, "final", [Dataset.open(outputs[-1].kept)])
    rejected = [Dataset.open(o.rejected) for o in outputs if Dataset.exists(o.rejected)]
    if Dataset.exists(run.target_rejected):
        rejected.append(Dataset.open(run.target_rejected))
    _add_view(con, "rejected", rejected)
    if Dataset.exists(run.target):
        _add_view(con, "target", [Dataset.open(run.target)])
    con.register("manifest", _manifest_table(run))
    return con


def query(run_dir: str | Path, sql: str) -> pa.Table:
    """Run one SQL query over a run directory; the result as an Arrow table."""
    con = connect(run_dir)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()

"""SQL over a run directory with DuckDB.

Views: one per step, named by its label (`ingest`, `dedup`, `mixture`, ...; an artifact step such as `finetune`
shows the rows it was built from); `<label>_all` (a step's kept and dropped rows together, with a boolean `kept`:
"what is in cluster 17" is one query); `final` (the last stage's rows); `rejected` (every dropped row of every
step, columns unified by name); `target` (the target rows selection stages saw) and `heldout` (the held-out
rows), when the run has them; `steps` (one row per step: stage, kind, output, parents, rows in / kept /
rejected / added / out, seconds, fingerprint, status); `manifest` (the same counts, for older scripts).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from curate.dataset import Dataset, side_path
from curate.errors import CurateError
from curate.rundir import TABLES, RunDir
from curate.summary import StepSummary, run_steps


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
        empty = datasets[0].schema.empty_table() if datasets else pa.table({"stage": pa.array([], pa.string())})
        con.register(name, empty)


def _add_all_view(con: duckdb.DuckDBPyConnection, name: str, kept: Dataset, rejected: Dataset | None) -> None:
    parts = [(kept, "true")] + ([(rejected, "false")] if rejected is not None else [])
    selects = [f"SELECT *, {flag} AS kept FROM {_files_sql([d.path / s for s in d.shard_names])}"
               for d, flag in parts if d.shard_names]
    if selects:
        con.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS " + " UNION ALL BY NAME ".join(selects))
    else:
        con.register(name, kept.schema.append(pa.field("kept", pa.bool_())).empty_table())


def _steps_table(steps: list[StepSummary]) -> pa.Table:
    rows = [{"index": s.index, "label": s.label, "stage": s.stage, "kind": s.kind, "output": s.output,
             "parents": s.parents, "rows_in": s.rows_in, "rows_kept": s.rows_kept, "rows_rejected": s.rows_rejected,
             "rows_added": s.rows_added, "rows_out": s.rows_out, "seconds": s.seconds, "status": s.status,
             "fingerprint": s.fingerprint, "metrics": json.dumps(s.metrics) if s.metrics else None}
            for s in steps]
    schema = pa.schema([("index", pa.int64()), ("label", pa.string()), ("stage", pa.string()),
                        ("kind", pa.string()), ("output", pa.string()), ("parents", pa.list_(pa.string())),
                        ("rows_in", pa.int64()), ("rows_kept", pa.int64()), ("rows_rejected", pa.int64()),
                        ("rows_added", pa.int64()), ("rows_out", pa.int64()), ("seconds", pa.float64()),
                        ("status", pa.string()), ("fingerprint", pa.string()), ("metrics", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def _manifest_table(steps: list[StepSummary]) -> pa.Table:
    rows = [{"index": s.index, "stage": s.label, "kind": s.stage, "rows_in": s.rows_in, "rows_out": s.rows_out,
             "rows_rejected": s.rows_rejected, "seconds": s.seconds,
             "shards": len(Dataset.open(s.rows).shard_names) if s.rows and not s.artifacts else 0,
             "fingerprint": s.fingerprint} for s in steps if not s.sample]
    return pa.Table.from_pylist(rows) if rows else pa.table({"index": pa.array([], pa.int64())})


def connect(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views."""
    run = RunDir.open(run_dir)
    con = duckdb.connect()
    steps = run_steps(run_dir)
    graph = [s for s in steps if not s.sample]
    for step in graph:
        if step.rows is None:
            continue
        kept = Dataset.open(step.rows)
        _add_view(con, step.label, [kept])
        if step.artifacts is None:
            rejected = Dataset.open(step.rejected) if step.rejected else None
            _add_all_view(con, f"{step.label}_all", kept, rejected)
            for table in sorted(side_path(step.rows, TABLES).glob("*.parquet")):  # a decision's own tables
                con.execute(f"CREATE OR REPLACE VIEW {_quote(step.label + '_' + table.stem)} AS "
                            f"SELECT * FROM {_files_sql([table])}")
    rows_steps = [s for s in graph if s.rows is not None and s.artifacts is None]
    if rows_steps:
        _add_view(con, "final", [Dataset.open(rows_steps[-1].rows)])
    rejected = [Dataset.open(s.rejected) for s in steps if s.rejected is not None]
    _add_view(con, "rejected", rejected)
    for name, folder in (("target", run.target), ("heldout", run.heldout)):
        if Dataset.exists(folder):
            _add_view(con, name, [Dataset.open(folder)])
    con.register("steps", _steps_table(steps))
    con.register("manifest", _manifest_table(steps))
    return con


READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA"}  # DESCRIBE, SHOW, SUMMARIZE and WITH ... SELECT are SELECTs


def check_read_only(sql: str) -> None:
    """Refuse any statement that could write (COPY, CREATE, INSERT, ATTACH, EXPORT, SET, INSTALL, ...): a run is
    opened read-only, so a query can never change or add files."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise CurateError(f"SQL error: {error}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_ONLY:
            raise CurateError(f"curate sql opens the run read-only: a {kind} statement is refused (allowed: "
                              f"{', '.join(sorted(READ_ONLY))}); to write rows elsewhere use `curate export`")


def read_only_connection(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """`connect`, with DuckDB's configuration locked: a statement cannot turn settings (or external access) back
    on. Run statements on it through `read_only_sql`."""
    con = connect(run_dir)
    con.execute("SET lock_configuration = true")
    return con


def read_only_sql(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation | None:
    """One checked statement (`check_read_only`) on a `read_only_connection`: its relation (None for PRAGMA)."""
    check_read_only(sql)
    return con.sql(sql)


def query(run_dir: str | Path, sql: str) -> pa.Table:
    """Run one read-only SQL query over a run directory; the result as an Arrow table."""
    check_read_only(sql)  # before the views are made: a refused statement fails at once
    con = read_only_connection(run_dir)
    try:
        return read_only_sql(con, sql).to_arrow_table()
    finally:
        con.close()

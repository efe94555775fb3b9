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
import pyarrow.dataset as pads

from curate.data.dataset import Dataset, side_path
from curate.data.errors import CurateError
from curate.data.rundir import TABLES, RunDir
from curate.inspect.summary import StepSummary, run_steps
from curate.stages.registry import REGISTRY


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


HIDDEN = "__"  # the parts behind a view made of several datasets: not listed by `.views`


def _arrow(dataset: Dataset) -> pads.Dataset | pa.Table:
    """A dataset's shards as an Arrow dataset with its schema: DuckDB scans it through Arrow, so the connection
    itself needs no file access (read_only_connection turns it off)."""
    files = [str(dataset.path / shard) for shard in dataset.shard_names]
    return pads.dataset(files, schema=dataset.schema, format="parquet") if files else dataset.schema.empty_table()


def _add_view(con: duckdb.DuckDBPyConnection, name: str, datasets: list[Dataset]) -> None:
    """A view of one dataset, or of several with their columns unified by name."""
    if len(datasets) == 1:
        con.register(name, _arrow(datasets[0]))
        return
    if not datasets:
        con.register(name, pa.table({"stage": pa.array([], pa.string())}))
        return
    _add_union(con, name, [(d, "") for d in datasets])


def _add_union(con: duckdb.DuckDBPyConnection, name: str, parts: list[tuple[Dataset, str]]) -> None:
    """`name` = the parts' rows, columns unified by name; each part may add select items (`, true AS kept`)."""
    selects = []
    for k, (dataset, extra) in enumerate(parts):
        hidden = f"{HIDDEN}{name}_{k}"
        con.register(hidden, _arrow(dataset))
        selects.append(f"SELECT *{extra} FROM {_quote(hidden)}")
    con.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS " + " UNION ALL BY NAME ".join(selects))


def _add_all_view(con: duckdb.DuckDBPyConnection, name: str, kept: Dataset, rejected: Dataset | None) -> None:
    """A step's kept and dropped rows with a boolean `kept` (a column of the data named `kept` shows as
    `kept_original`)."""
    parts = []
    for dataset, flag in [(kept, "true"), *([(rejected, "false")] if rejected is not None else [])]:
        rename = " RENAME (kept AS kept_original)" if "kept" in dataset.schema.names else ""
        parts.append((dataset, f"{rename}, {flag} AS kept"))
    _add_union(con, name, parts)


def _add_audit_views(con: duckdb.DuckDBPyConnection, step: StepSummary) -> None:
    """A stage's audit column (a list of records per row, e.g. `pii_spans`) as a view of one row per record,
    with the row's id and whether the row was kept: `<label>_pii`."""
    stage = REGISTRY.get(step.stage)
    for suffix, column in (getattr(stage, "audit_views", None) or {}).items():
        all_rows = _quote(f"{step.label}_all")
        names = {r[0] for r in con.execute(f"DESCRIBE {all_rows}").fetchall()}
        if column in names:
            con.execute(f"CREATE OR REPLACE VIEW {_quote(f'{step.label}_{suffix}')} AS SELECT id, kept, "
                        f"unnest({_quote(column)}, recursive := true) FROM {all_rows}")


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
        if step.artifacts is not None:  # an artifact step's own tables (a search's candidates): <label>_<name>
            for table in sorted(Path(step.artifacts).glob("*.parquet")):
                con.register(f"{step.label}_{table.stem}", pads.dataset(str(table), format="parquet"))
        if step.rows is None:
            continue
        kept = Dataset.open(step.rows)
        _add_view(con, step.label, [kept])
        if step.artifacts is None:
            rejected = Dataset.open(step.rejected) if step.rejected else None
            _add_all_view(con, f"{step.label}_all", kept, rejected)
            for table in sorted(side_path(step.rows, TABLES).glob("*.parquet")):  # a decision's own tables
                con.register(f"{step.label}_{table.stem}", pads.dataset(str(table), format="parquet"))
            _add_audit_views(con, step)
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


LOCKED = ("SET python_enable_replacements = false", "SET autoinstall_known_extensions = false",
          "SET autoload_known_extensions = false", "SET enable_external_access = false",
          "SET lock_configuration = true")


def read_only_connection(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """`connect`, then read-only by construction: the views read the run through Arrow, and the connection itself
    may touch no file (no COPY, EXPORT/IMPORT, ATTACH, INSTALL, `read_csv` of any path), load no extension and
    see no Python variable; its configuration is locked, so no statement can turn that back. Run statements on it
    through `read_only_sql`."""
    con = connect(run_dir)
    for setting in LOCKED:
        con.execute(setting)
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

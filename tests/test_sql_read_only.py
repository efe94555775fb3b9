"""`curate sql`, `run.sql` and the prompt are read-only by construction: the connection reads the run through Arrow
and may touch no file itself, so no statement (COPY, EXPORT/IMPORT DATABASE, ATTACH, INSTALL, SET, EXPLAIN ANALYZE
of any of them, several statements, comments) creates or changes a file anywhere the test can watch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from curate import open_run
from curate.cli.sql_shell import SqlShell
from curate.data.errors import CurateError
from curate.engine.config import parse_config
from curate.engine.runner import run_pipeline
from curate.inspect.sql import query
from tests.cli_runner import curate


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sqlrun")
    rows = [{"text": f"row number {i} of a small run that is long enough" if i % 2 else f"short row {i}",
             "kept": i % 2} for i in range(40)]  # an input column named `kept`; heuristics drops the short rows
    (tmp / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"name": "sql", "inputs": [{"path": str(tmp / "in.jsonl")}], "output": str(tmp / "run"),
              "engine": {"prefect": False}, "stages": [{"normalize": {}}, {"heuristics": {"min_words": 6}}]}
    run_pipeline(parse_config(config, base_dir=tmp))
    # an IMPORT DATABASE folder whose schema would write a file
    evil = tmp / "evil"
    evil.mkdir()
    (evil / "schema.sql").write_text(f"COPY (SELECT 42) TO '{tmp / 'imported.csv'}';\n")
    (evil / "load.sql").write_text("")
    return tmp / "run"


def hostile(run: Path) -> list[str]:
    target = run.parent / "pwn"
    manifest = run / "stages" / "01-normalize.meta" / "manifest.json"
    writes = [
        f"COPY (SELECT 42) TO '{target}.csv'",
        f"COPY (SELECT * FROM final) TO '{target}.parquet' (FORMAT parquet)",
        f"COPY final TO '{target}2.csv'",
        f"COPY (SELECT '{{}}' AS x) TO '{manifest}' (FORMAT csv, HEADER false)",
        f"EXPORT DATABASE '{run.parent / 'exported'}'",
        f"IMPORT DATABASE '{run.parent / 'evil'}'",
        f"ATTACH '{target}.duckdb' AS x",
        f"ATTACH '{target}.db' (TYPE sqlite)",
        "INSTALL httpfs", "LOAD httpfs", "INSTALL sqlite", "FORCE INSTALL json",
        "SET enable_external_access = true", "RESET enable_external_access", "SET lock_configuration = false",
        "SET autoinstall_known_extensions = true", "SET python_enable_replacements = true",
        "SET temp_directory = '/tmp/curate-sql-temp'", "PRAGMA enable_profiling", "PRAGMA profiling_output = 'p.txt'",
        f"PRAGMA import_database('{run.parent / 'evil'}')", "PRAGMA threads = 1", "CALL pragma_version()",
        "CREATE TABLE t AS SELECT 1", "CREATE VIEW v AS SELECT 1", "CREATE MACRO m() AS 1", "CREATE SEQUENCE s",
        "CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE PERSISTENT SECRET p (TYPE s3, KEY_ID 'a')",
        "INSERT INTO final SELECT * FROM final", "DELETE FROM final", "UPDATE final SET text = ''", "DROP VIEW final",
        "ALTER VIEW final RENAME TO f2", "CHECKPOINT", "VACUUM", "DETACH memory", "USE memory",
        "SELECT * FROM read_csv('/etc/hostname')", "SELECT * FROM read_text('/etc/hostname')",
        f"SELECT * FROM read_parquet('{run / 'stages' / '01-normalize' / '*.parquet'}')",
        "SELECT * FROM glob('/*')", f"SELECT * FROM '{target}.csv'",
        f"SELECT 1; COPY (SELECT 42) TO '{target}3.csv'",
        f"/* a comment */ COPY (SELECT 42) TO '{target}4.csv' -- more",
        f"WITH x AS (SELECT 42) SELECT * FROM x; EXPORT DATABASE '{run.parent / 'exported2'}'",
        "SELECT current_setting('enable_external_access')",  # allowed, and it says false
    ]
    explained = [f"EXPLAIN ANALYZE {s}" for s in writes[:24]] + [f"EXPLAIN {s}" for s in writes[:6]]
    return writes + explained


def files_under(*roots: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for root in roots:
        for path in root.rglob("*") if root.exists() else []:
            if path.is_file():
                stat = path.stat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_no_statement_writes_a_file(small_run, tmp_path):
    statements = hostile(small_run)
    assert len(statements) >= 60
    watched = [small_run.parent, Path.home() / ".duckdb", Path(os.environ.get("TMPDIR", "/tmp")) / "curate-sql-temp"]
    before = files_under(*watched)
    run = open_run(small_run)
    shell = SqlShell(small_run, lambda thing: None)
    for statement in statements:
        for attempt in (lambda s: query(small_run, s), run.sql, lambda s: shell.handle(s + ";")):
            try:
                result = attempt(statement)
            except (CurateError, Exception):  # refused, or DuckDB's permission error: both leave nothing behind
                continue
            if statement.startswith("SELECT current_setting") and hasattr(result, "column"):
                assert result.column(0)[0].as_py() is False
    assert files_under(*watched) == before
    assert query(small_run, "SELECT count(*) AS n FROM final").column("n")[0].as_py() > 0  # reading still works


def test_the_cli_refuses_and_reads(small_run):
    said = curate("sql", str(small_run), f"EXPLAIN ANALYZE COPY (SELECT 42) TO '{small_run.parent / 'cli.csv'}'",
                  cwd=small_run.parent, check=False)
    assert said.returncode != 0 and not (small_run.parent / "cli.csv").exists()
    shown = curate("sql", str(small_run), "SELECT kept, kept_original, count(*) AS n FROM heuristics_all "
                   "GROUP BY ALL ORDER BY ALL", "--format", "json", cwd=small_run.parent)
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {r["kept_original"] for r in rows} == {0, 1} and {r["kept"] for r in rows} == {True, False}

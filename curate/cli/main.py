"""The core commands: run, validate, demo, sql, inspect, export (the others: one module per command group)."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import typer

from curate.cli.app import app, fail, run_config_file
from curate.data.errors import CurateError


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


DEMO_QUERIES = [
    ("Why were rows dropped?",
     "SELECT stage, split_part(reason, ':', 1) AS reason, count(*) AS rows FROM rejected GROUP BY ALL "
     "ORDER BY rows DESC"),
    ("Which rows repeat held-out rows, and where?",
     "SELECT id, item AS heldout_row, action, left(ngram, 40) AS ngram FROM decontaminate_matches "
     "QUALIFY row_number() OVER (PARTITION BY id ORDER BY start) = 1 ORDER BY id LIMIT 5"),
    ("Which rows were near duplicates, and of what?",
     "SELECT r.id, r.duplicate_of, round(r.score, 2) AS est_jaccard, left(r.text, 50) AS text "
     "FROM rejected r WHERE r.reason = 'near_duplicate' LIMIT 5"),
    ("What is left, by source?",
     "SELECT source, count(*) AS kept FROM final GROUP BY source ORDER BY kept DESC"),
]


@app.command()
def run(
    config: Path = typer.Argument(..., help="pipeline config (YAML)"),
    output: Path = typer.Option(None, "--output", "-o", help="run directory (default: the config's `output`)"),
    workers: int = typer.Option(None, "--workers", "-w", help="parallel tasks (default: engine.workers)"),
    no_prefect: bool = typer.Option(False, "--no-prefect", help="run in-process without Prefect"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show curate's and Prefect's logs"),
    no_report: bool = typer.Option(False, "--no-report", help="do not write report.html at the end"),
) -> None:
    """Run a pipeline config. Finished stages are skipped; interrupted ones resume."""
    run_config_file(config, output, workers, no_prefect, verbose, report=not no_report)


@app.command()
def validate(config: Path = typer.Argument(..., help="pipeline config (YAML)")) -> None:
    """Check a config (keys, stage names and parameters, input paths) without running it."""
    from curate.cli.console import console
    from curate.engine.config import load_config
    from curate.io.sources import plan_units

    try:
        cfg = load_config(config)
        units = plan_units(cfg)
    except CurateError as error:
        fail(error)
    console.print(f"[green]ok[/]: {cfg.name!r}: {len(units)} input file(s) -> {cfg.output_dir()}")
    for spec in cfg.stage_specs():
        reads = ", ".join(spec.parents)
        console.print(f"  {spec.label} ({spec.name} <- {reads}): {json.dumps(spec.params)}", highlight=False)
    _warn_memory(cfg, units)


def _warn_memory(cfg: Any, units: list[Any]) -> None:
    """Warn of global steps whose decision would not fit in this machine's memory (every step at all rows)."""
    from curate.cli.console import console
    from curate.engine.memory_estimate import estimated_rows, memory_warnings
    from curate.stages import REGISTRY

    rows = sum(estimated_rows(u) for u in units)
    steps = [(s.label, REGISTRY[s.name](s.params), rows) for s in cfg.stage_specs()]
    for warning in memory_warnings(steps):
        console.print(f"[yellow]warning[/]: {warning}", highlight=False)


@app.command()
def demo(
    output: Path = typer.Option(Path("curate-demo"), "--output", "-o", help="run directory"),
    no_prefect: bool = typer.Option(False, "--no-prefect", help="run in-process without Prefect"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    no_report: bool = typer.Option(False, "--no-report", help="do not write report.html at the end"),
) -> None:
    """Run the demo pipeline on the packaged demo corpus (clean, dedup, score, select, mix, fine-tune, and evaluate
    the selection against random subsets), show what SQL can ask of it, and write the HTML report."""
    from curate.cli.console import arrow_table, console
    from curate.inspect.sql import query

    config = Path(str(resources.files("curate.configs") / "demo.yaml"))
    run_dir = run_config_file(config, output, None, no_prefect, verbose, report=False)
    console.print("\n[bold]Ask the run with SQL[/] (DuckDB; one view per stage, plus rejected, final, manifest):")
    for question, sql in DEMO_QUERIES:
        console.print(f"\n[bold]{question}[/]\n  curate sql {run_dir} \"{sql}\"", highlight=False)
        console.print(arrow_table(query(run_dir, sql), max_rows=25))
    if not no_report:
        from curate.inspect.report import build_report

        console.print(f"\n[bold]The report[/] (open it in a browser): {build_report(run_dir)}", highlight=False)


@app.command()
def sql(
    run_dir: Path = typer.Argument(..., help="run directory"),
    query_text: str = typer.Argument(None, metavar="[QUERY]", help="SQL (DuckDB dialect); none: an interactive "
                                     "prompt"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="output format"),
    max_rows: int = typer.Option(50, "--max-rows", help="rows shown with --format table"),
) -> None:
    """Query a run with SQL: a view per step (by label), <label>_all, final, rejected, target, heldout, steps.
    Without a query, a read-only prompt with history, `.views` and `.schema VIEW`."""
    import duckdb

    from curate.cli.console import arrow_table, console
    from curate.inspect.sql import query

    if query_text is None:
        from curate.cli.sql_shell import SqlShell

        try:
            shell = SqlShell(run_dir, lambda thing: console.print(thing, highlight=False), max_rows=max_rows)
        except CurateError as error:
            fail(error)
        shell.loop()
        return
    try:
        result = query(run_dir, query_text)
    except CurateError as error:
        fail(error)
    except duckdb.Error as error:
        fail(f"SQL: {error}")
    if fmt is Format.table:
        console.print(arrow_table(result, max_rows=max_rows))
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.column_names)
        for row in result.to_pylist():
            writer.writerow(row.values())
    else:
        _write_json_lines(result)


def _write_json_lines(result: Any) -> None:
    """One JSON object per row on stdout: polars' writer (10x a loop, benchmarks/bench_tables.py); a loop for the
    types polars cannot take (DuckDB's intervals, unions, ...)."""
    from curate.inspect.export import write_jsonl

    try:
        buffer = io.BytesIO()
        write_jsonl(result, buffer)
        sys.stdout.flush()
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
    except Exception:  # any conversion error: the plain loop writes every type
        for row in result.to_pylist():
            sys.stdout.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")


@app.command()
def inspect(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """The steps as a graph, rows per step, drop reasons, time, artifacts' metrics, cluster sizes."""
    from curate.cli.console import cluster_table, console, reasons_table, stage_table
    from curate.inspect.clusters import cluster_summaries
    from curate.inspect.summary import graph_lines, summarize_run

    try:
        summaries = summarize_run(run_dir)
        clusters = cluster_summaries(run_dir)
    except CurateError as error:
        fail(error)
    console.print(f"[bold]graph[/] of run {run_dir}:", highlight=False)
    for line in graph_lines(summaries):
        console.print("  " + line, highlight=False)
    console.print(stage_table(summaries, title=f"run {run_dir}"))
    if any(s.reasons for s in summaries):
        console.print(reasons_table(summaries))
    for summary in clusters:
        console.print(cluster_table(summary))
    _warn_memory_after(run_dir, summaries)


def _warn_memory_after(run_dir: Path, summaries: list[Any]) -> None:
    """The same warning from a run's own counts: a bigger pool through the same config would not fit."""
    from curate.cli.console import console
    from curate.engine.config import load_config
    from curate.engine.memory_estimate import memory_warnings
    from curate.stages import REGISTRY

    frozen = Path(run_dir) / "config.yaml"
    if not frozen.is_file():
        return
    try:
        specs = {s.label: s for s in load_config(frozen).stage_specs()}
    except CurateError:  # its inputs moved: no estimate
        return
    steps = [(s.label, REGISTRY[specs[s.label].name](specs[s.label].params), s.rows_in)
             for s in summaries if s.label in specs and s.rows_in]
    for warning in memory_warnings(steps):
        console.print(f"[yellow]warning[/]: {warning}", highlight=False)


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"
    hf = "hf"


class RecordShape(str, Enum):
    auto = "auto"
    messages = "messages"
    prompt_completion = "prompt-completion"
    text = "text"


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="run directory"),
    label: str = typer.Argument(..., help="the step to export (e.g. mixture)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder to write"),
    fmt: ExportFormat = typer.Option(ExportFormat.jsonl, "--format", "-f", help="jsonl, parquet or hf (a datasets "
                                     "save_to_disk folder)"),
    shape: RecordShape = typer.Option(RecordShape.auto, "--as", help="records: messages, prompt-completion (TRL's "
                                      "names), text; auto: each row by its kind (one file per kind)"),
) -> None:
    """Write a step's rows as files trainers read as they are."""
    from curate.cli.console import console
    from curate.inspect.export import export_step

    try:
        folder, used, rows = export_step(run_dir, label, out, fmt.value, shape.value)
    except CurateError as error:
        fail(error)
    console.print(f"exported {rows:,} rows of {label!r} as {used} records ({fmt.value}) to {folder}", highlight=False)



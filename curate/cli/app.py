"""The Typer app every command module adds its commands to, and what several commands share: the one-line error
exit (`fail`) and running a config file with progress bars and a summary (`run_config_file`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer

from curate.data.errors import CurateError

app = typer.Typer(help="Curate and select language-model training data.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def fail(error: Exception) -> None:
    from curate.cli.console import console

    console.print(f"[bold red]error:[/] {error}", highlight=False)
    raise typer.Exit(2)


def _quiet_prefect(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


class _NotCurateErrors(logging.Filter):
    """Drops Prefect's log records of a failed run whose cause is a CurateError: the CLI says the error in one line
    (`-v` shows Prefect's records, traceback included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, CurateError) and "CurateError" not in record.getMessage()


def _hide_curate_errors_in_prefect_logs() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(_NotCurateErrors())


def run_config_file(config_path: Path, output: Path | None, workers: int | None, no_prefect: bool, verbose: bool,
                    report: bool = True) -> Path:
    """Run a YAML config with progress bars, then print its steps, its evaluations and (with `report`) where its
    report is; a CurateError is printed in one line and exits with status 2."""
    from curate.cli.console import RichProgress, console, stage_table
    from curate.engine.config import load_config
    from curate.inspect.summary import summarize_run
    from curate.pipeline import run_config

    _quiet_prefect(verbose)
    out = str(output.resolve()) if output else None
    try:
        config = load_config(config_path, output=out)
        prefect = config.engine.prefect and not no_prefect
        with RichProgress():
            if prefect:
                import curate.flows.pipeline  # noqa: F401  (loads Prefect before its logs are filtered)

                if not verbose:
                    _hide_curate_errors_in_prefect_logs()
            run_config(config, prefect=prefect, workers=workers)
    except CurateError as error:
        fail(error)
    run_dir = config.output_dir()
    summaries = summarize_run(run_dir)
    console.print(stage_table(summaries, title=f"run {config.name!r} -> {run_dir}"))
    print_evaluations(summaries)
    if report:
        from curate.inspect.report import build_report

        console.print(f"report: {build_report(run_dir)}", highlight=False)
    return run_dir


def print_evaluations(summaries: list[Any]) -> None:
    """The closed-loop table of each `evaluate` step of a run."""
    from curate.cli.console import console, evaluation_table
    from curate.inspect.summary import evaluations

    for label, results in evaluations(summaries).items():
        console.print(evaluation_table(results, title=f"closed-loop evaluation {label!r}"))

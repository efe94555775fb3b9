"""The closed-loop commands of the `curate` CLI: `evaluate` (show a run's evaluations, or add one to a finished
run and run it) and `report` (the run's HTML report)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from curate.cli.app import app, fail, print_evaluations, run_config_file
from curate.data.errors import CurateError


def _evaluate_entry(selection: str, pool: str, finetune: Path, label: str, seeds: int, full: bool,
                    multiples: str) -> dict:
    if not finetune.is_file():
        raise CurateError(f"--finetune: {str(finetune)!r} is not a file (a YAML mapping of the fine-tuning "
                          "settings, e.g. {init: scratch, epochs: 1})")
    settings = yaml.safe_load(finetune.read_text(encoding="utf-8"))
    if not isinstance(settings, dict):
        raise CurateError(f"--finetune: {str(finetune)!r} must hold a YAML mapping, got {type(settings).__name__}")
    try:
        factors = [float(m) for m in multiples.split(",") if m.strip()]
    except ValueError:
        raise CurateError(f"--random-multiples: {multiples!r} is not a comma-separated list of numbers") from None
    return {"evaluate": {"label": label, "from": selection, "pool": pool, "seeds": seeds, "full": full,
                         "random_multiples": factors, "finetune": settings}}


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="run directory"),
    selection: str = typer.Option(None, "--selection", help="label of the step to evaluate (adds an evaluate step)"),
    pool: str = typer.Option(None, "--pool", help="label of the step it was selected from"),
    finetune: Path = typer.Option(None, "--finetune", help="YAML file: how each arm fine-tunes (the evaluate "
                                  "stage's `finetune:` settings)"),
    label: str = typer.Option("evaluate", "--label", help="label of the added step"),
    seeds: int = typer.Option(3, "--seeds", help="training seeds per arm"),
    full: bool = typer.Option(False, "--full", help="also train on the whole pool"),
    multiples: str = typer.Option("", "--random-multiples", help="larger random arms, e.g. 2,4"),
    no_prefect: bool = typer.Option(False, "--no-prefect", help="run in-process without Prefect"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Show a run's closed-loop evaluations; with --selection, --pool and --finetune, first add an evaluate step
    to the run's config and run it (finished steps are not redone)."""
    from curate.cli.console import console
    from curate.inspect.summary import evaluations, summarize_run

    try:
        if selection is None:
            summaries = summarize_run(run_dir)
            if not evaluations(summaries):
                raise CurateError(f"{run_dir} has no finished evaluate step; add one with --selection, --pool and "
                                  "--finetune, or an `evaluate:` stage in the config")
            print_evaluations(summaries)
            return
        if pool is None or finetune is None:
            raise CurateError("--selection needs --pool (the step it was selected from) and --finetune")
        frozen = run_dir / "config.yaml"
        if not frozen.is_file():
            raise CurateError(f"{run_dir} is not a run directory (it has no config.yaml)")
        data = yaml.safe_load(frozen.read_text(encoding="utf-8"))
        # an evaluate step of the same label is replaced
        data["stages"] = [s for s in data["stages"] if (next(iter(s.values())) or {}).get("label") != label]
        data["stages"].append(_evaluate_entry(selection, pool, finetune, label, seeds, full, multiples))
        extended = run_dir / f"config-{label}.yaml"
        extended.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    except CurateError as error:
        fail(error)
    console.print(f"added step {label!r} to the run's config: {extended}", highlight=False)
    run_config_file(extended, None, None, no_prefect, verbose)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Write the run's HTML report (report.html in the run): steps, scores, clusters, embeddings, mixtures, the
    closed-loop evaluation, sample rows, metadata. One file; it opens without a network."""
    from curate.cli.console import console
    from curate.inspect.report import build_report

    try:
        if not (run_dir / "run.json").is_file():
            raise CurateError(f"{run_dir} is not a run directory (it has no run.json)")
        path = build_report(run_dir)
    except CurateError as error:
        fail(error)
    console.print(f"report: {path}", highlight=False)

"""`curate budget`: how much of a scored step to keep for a compute budget (docs/methods.md §8).

The step's rows, kept and dropped (its `<label>_all` view), are split into quality buckets by quantiles of the
score column; tokens are white-space words of `text`. The scaling law predicts the error of training on the best
m buckets for the budget (`--tokens`, or `--epochs` over all scored tokens); the command prints that curve and
the recommended selection ratio. Its parameters: fitted to measurements of your own runs (`--fit`), given
(`--utility`, `--half-life`), or our heuristic defaults, which it says.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from curate.cli.app import app, fail
from curate.data.errors import CurateError


def _floats(value: str | None, option: str) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise CurateError(f"{option}: {value!r} is not a comma-separated list of numbers") from None


def scored_step(run_dir: Path, score: str, label: str | None) -> tuple[str, str]:
    """(label, stage) of the step whose rows hold `score`: the one named, else the last such step."""
    from curate.inspect.sql import connect
    from curate.inspect.summary import run_steps

    steps = [s for s in run_steps(run_dir) if not s.sample and s.artifacts is None and s.rows is not None]
    if label is not None and label not in {s.label for s in steps}:
        names = ", ".join(s.label for s in steps)
        raise CurateError(f"--step: no step {label!r} with rows in {run_dir}; steps: {names}")
    con = connect(run_dir)
    try:
        found = [s for s in steps if (label is None or s.label == label) and
                 score in [c[0] for c in con.execute(f'DESCRIBE "{s.label}_all"').fetchall()]]
    finally:
        con.close()
    if not found:
        where = f"step {label!r}" if label else "any step"
        raise CurateError(f"--score: {where} of {run_dir} has no column {score!r} (e.g. color_score, ot_grad, "
                          "dsir_logw, ppl)")
    return found[-1].label, found[-1].stage


@app.command()
def budget(
    run_dir: Path = typer.Argument(..., help="run directory"),
    score: str = typer.Option(..., "--score", help="the quality score column (color_score, ot_grad, dsir_logw, ppl)"),
    tokens: float = typer.Option(None, "--tokens", help="training budget in tokens (white-space words)"),
    epochs: float = typer.Option(None, "--epochs", help="training budget as passes over all scored tokens"),
    step: str = typer.Option(None, "--step", help="label of the scored step (default: the last one with --score)"),
    buckets: int = typer.Option(10, "--buckets", help="quality buckets (quantiles of the score)"),
    utility: str = typer.Option(None, "--utility", help="fitted utility exponents b_i, best bucket first, comma-"
                                "separated (default: our heuristic)"),
    half_life: str = typer.Option(None, "--half-life", help="fitted repetition half-lives τ_i, comma-separated"),
    fit: Path = typer.Option(None, "--fit", help="fit the law to your runs first: a CSV or JSON of measurements "
                             "(bucket, samples, pool, error; bucket 0 = the best)"),
    lower_is_better: bool = typer.Option(None, "--lower-is-better/--higher-is-better",
                                         help="the score's direction (default: the stage's)"),
    as_json: bool = typer.Option(False, "--json", help="print the recommendation as JSON"),
) -> None:
    """Recommend a selection ratio for a compute budget from a scored step (the scaling law of §8)."""
    from curate.cli.console import console
    from curate.inspect.sql import query
    from curate.methods.scaling import ComputeParams, recommend
    from curate.models.token_count import word_counts
    from curate.stages import REGISTRY

    try:
        settings = {"utility": _floats(utility, "--utility"), "half_life": _floats(half_life, "--half-life")}
        if fit is not None:
            from curate.methods.scaling_fit import fit_parameters, read_measurements

            fitted = fit_parameters(read_measurements(fit))
            settings = {"buckets": len(fitted.b), "utility": fitted.b, "half_life": fitted.tau, "a": fitted.a,
                        "z": fitted.z}
            if not as_json:
                console.print(f"fitted to {fit}: a = {fitted.a:.4g}, b = {[round(b, 3) for b in fitted.b]}, "
                              f"τ = {[round(t, 2) for t in fitted.tau]} (squared error {fitted.sse:.3g})")
        compute = ComputeParams(tokens=tokens, epochs=epochs, **{"buckets": buckets, **settings})
    except ValueError as error:
        fail(CurateError(str(error).split("\n", 1)[-1]))
    try:
        label, stage = scored_step(run_dir, score, step)
        table = query(run_dir, f'SELECT "{score}" AS score, text FROM "{label}_all"')
    except CurateError as error:
        fail(error)
    higher = not lower_is_better if lower_is_better is not None else \
        getattr(REGISTRY.get(stage), "higher_is_better", True)
    values = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    rec = recommend(values, word_counts(table.column("text")), compute, higher_is_better=higher)
    if as_json:
        print(json.dumps({"step": label, "score": score, "higher_is_better": higher, **rec.summary(),
                          "curve": rec.curve, "b": rec.b, "tau": rec.tau}, indent=1))
        return
    out = Table(title=f"{label}: predicted error by how many of {rec.buckets} quality buckets of {score!r} are kept")
    for name in ("keep best", "share", "rows", "tokens", "passes", "predicted error"):
        out.add_column(name, justify="right")
    for c in rec.curve:
        mark = " <" if c["m"] == rec.m else ""
        out.add_row(f"{c['m']}/{rec.buckets}", f"{c['m'] / rec.buckets:.0%}", f"{c['rows']:,}", f"{c['tokens']:,.0f}",
                    f"{c['passes']:.2f}", f"{c['predicted_error']:.5f}{mark}")
    console.print(out)
    console.print(f"budget: {rec.budget_tokens:,.0f} tokens; {'higher' if higher else 'lower'} {score} is better")
    console.print(f"[bold]recommended selection ratio: {rec.fraction:.1%}[/] (the best {rec.m} of {rec.buckets} "
                  f"buckets); the rule of thumb (at most ~{np.mean(rec.tau):g} passes) says {rec.rule_of_thumb_m}")
    if rec.parameters == "heuristic":
        console.print("parameters: heuristic defaults (ours, docs/methods.md §8.3: b_i = -0.1·(1 - 0.1·(i-1)), "
                      "τ_i = 4); fit --utility and --half-life on your own runs for a real prediction")

"""`curate search`: show a run's mixture searches, or add one to a finished run and run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from curate.cli.app import app, fail, run_config_file
from curate.data.errors import CurateError


def search_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Label -> `search.json` of every finished `mixture_search` step of the run."""
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(run_dir.glob("models/*/search.json"))}


def print_search(label: str, report: dict[str, Any]) -> None:
    from rich.table import Table

    from curate.cli.console import console

    parts = Table(title=f"mixture search {label!r}: {len(report['candidates'])} proxies, regressor "
                        f"{report['regressor']['kind']} (cross-validated Spearman "
                        f"{report['regressor']['cv_spearman']:.3f})")
    for column in ("part", "tokens", "natural", "searched", "recommended"):
        parts.add_column(column, justify="left" if column == "part" else "right")
    for part in report["parts"]:
        parts.add_row(part, f"{report['tokens'][part]:,}", f"{report['natural'][part]:.3f}",
                      f"{report['searched'][part]:.3f}", f"{report['recommended'][part]:.3f}")
    console.print(parts)
    arms = Table(title="validation on held-out rows (mean NLL per token)")
    for column in ("arm", "held-out loss", "- natural (95% CI)"):
        arms.add_column(column, justify="left" if column == "arm" else "right")
    for arm, v in report["validation"].items():
        spread = f" ± {v['std']:.3f}" if v.get("std") is not None else ""
        diff = v.get("vs_natural")
        against = "" if not diff else (f"{diff['mean']:+.3f}" + (
            f" [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]" if diff.get("ci95") else ""))
        arms.add_row(arm, f"{v['mean']:.3f}{spread}", against)
    console.print(arms)
    console.print(f"kept: {report['kept']} ({report['why']})", highlight=False)


@app.command()
def search(
    run_dir: Path = typer.Argument(..., help="run directory"),
    parts: str = typer.Option(None, "--from", help="comma-separated labels of the parts' steps (adds a search)"),
    by: str = typer.Option(None, "--by", help="split one step (--step) by this column instead"),
    step: str = typer.Option(None, "--step", help="with --by: the step to split"),
    tokens: int = typer.Option(None, "--tokens", help="training tokens of each proxy"),
    candidates: int = typer.Option(64, "--candidates", help="proxies of the first round"),
    rounds: int = typer.Option(1, "--rounds", help="search rounds (CLIMB); later rounds halve"),
    seeds: int = typer.Option(3, "--seeds", help="validation trainings per arm"),
    proxy: Path = typer.Option(None, "--proxy", help="YAML file: the proxies' fine-tuning settings"),
    label: str = typer.Option("mixture_search", "--label", help="label of the added step"),
    no_prefect: bool = typer.Option(False, "--no-prefect", help="run in-process without Prefect"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Show a run's mixture searches; with --from (or --by and --step) and --tokens, first add a mixture_search
    step to the run's config and run it (finished steps are not redone)."""
    try:
        if parts is None and by is None:
            found = search_results(run_dir)
            if not found:
                raise CurateError(f"{run_dir} has no finished mixture_search step; add one with --from and --tokens, "
                                  "or a `mixture_search:` stage in the config")
            for name, report in found.items():
                print_search(name, report)
            return
        frozen = run_dir / "config.yaml"
        if not frozen.is_file():
            raise CurateError(f"{run_dir} is not a run directory (it has no config.yaml)")
        if tokens is None:
            raise CurateError("--tokens is needed: the training tokens of each proxy")
        if by is not None and step is None:
            raise CurateError("--by needs --step: the step whose rows are split into parts")
        entry: dict[str, Any] = {"label": label, "tokens": tokens, "candidates": candidates, "rounds": rounds,
                                 "seeds": seeds}
        entry.update({"from": step, "by": by} if by else {"from": [p.strip() for p in parts.split(",")]})
        if proxy is not None:
            if not proxy.is_file():
                raise CurateError(f"--proxy: {str(proxy)!r} is not a file")
            settings = yaml.safe_load(proxy.read_text(encoding="utf-8"))
            if not isinstance(settings, dict):
                raise CurateError(f"--proxy: {str(proxy)!r} must hold a YAML mapping")
            entry["proxy"] = settings
        data = yaml.safe_load(frozen.read_text(encoding="utf-8"))
        data["stages"] = [s for s in data["stages"] if (next(iter(s.values())) or {}).get("label") != label]
        data["stages"].append({"mixture_search": entry})
        extended = run_dir / f"config-{label}.yaml"
        extended.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    except CurateError as error:
        fail(error)
    run_config_file(extended, None, None, no_prefect, verbose, report=False)
    for name, report in search_results(run_dir).items():
        if name == label:
            print_search(name, report)

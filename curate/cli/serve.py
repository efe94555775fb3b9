"""`curate server` (a local Prefect server) and `curate schedule` (a config served as a scheduled deployment).

- `server` starts `prefect server start` bound to 127.0.0.1 by default, analytics off, and says which
  `PREFECT_API_URL` to set. It runs in the foreground until stopped (Ctrl-C).
- `schedule` validates the config, then serves the pipeline flow as the deployment `curate-pipeline/<name>` with
  a cron or interval schedule, against the server in `PREFECT_API_URL`, until stopped. Each scheduled run is a
  `curate run` of the same config: finished steps are skipped by fingerprint, so a run over unchanged inputs does
  no work. Stop `schedule` before the server (the other order hangs Prefect's client).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from curate.cli.app import app, fail
from curate.data.errors import CurateError

QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


@app.command()
def server(
    port: int = typer.Option(4200, help="port of the API (and UI)"),
    host: str = typer.Option("127.0.0.1", help="address to bind; 127.0.0.1 keeps it off the network"),
    ui: bool = typer.Option(True, help="serve Prefect's web UI too"),
) -> None:
    """Start a local Prefect server (foreground; Ctrl-C stops it)."""
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or shutil.which("prefect")
    if prefect is None:
        fail("the `prefect` command is not installed in this environment")
    env = {**QUIET, **os.environ, "PREFECT_UI_API_URL": f"http://{host}:{port}/api"}  # the UI calls this port
    if not ui:
        env["PREFECT_SERVER_UI_ENABLED"] = "false"
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: binding {host} exposes the server (it has no authentication) beyond this machine",
                   err=True)
    typer.echo(f"Prefect server on http://{host}:{port}; in other shells: "
               f"export PREFECT_API_URL=http://{host}:{port}/api")
    os.execve(prefect, [prefect, "server", "start", "--host", host, "--port", str(port)], env)


@app.command()
def schedule(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="pipeline YAML"),
    cron: str | None = typer.Option(None, help='cron schedule, e.g. "0 3 * * *" (every day at 03:00)'),
    interval: float | None = typer.Option(None, help="or: seconds between runs"),
    name: str | None = typer.Option(None, help="deployment name (default: the config's name)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="run folder (default: the config's output)"),
) -> None:
    """Serve CONFIG as a scheduled Prefect deployment (foreground; Ctrl-C stops serving)."""
    from curate.engine.config import load_config

    if (cron is None) == (interval is None):
        fail("give exactly one of --cron and --interval")
    if interval is not None and not interval > 0:
        fail(f"--interval must be > 0 seconds, got {interval}")
    if not os.environ.get("PREFECT_API_URL"):
        fail("curate schedule serves against a Prefect server: start one with `curate server`, then "
              "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    out = str(output.resolve()) if output else None
    try:
        loaded = load_config(config, output=out)
    except CurateError as error:
        fail(error)
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    from curate.flows.pipeline import curate_pipeline, task_runner

    deployment = name or loaded.name
    typer.echo(f"serving curate-pipeline/{deployment} ({'cron ' + cron if cron else f'every {interval:g} s'}); "
               f"run it now with: prefect deployment run 'curate-pipeline/{deployment}'")
    runnable = curate_pipeline.with_options(task_runner=task_runner(loaded))
    runnable.serve(name=deployment, cron=cron, interval=interval,
                   parameters={"config_path": str(config.resolve()), "output": out}, print_starting_message=False)

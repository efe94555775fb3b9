"""The `curate` command: the Typer app (`curate.cli.app`), its commands (one module per command group: `main` holds
run, validate, demo, sql, inspect and export, listed first), console output and the SQL prompt."""

import curate.cli.main  # noqa: F401  (each command module adds its commands to the app)
from curate.cli import budget, evaluate, search, serve, train  # noqa: F401
from curate.cli.app import app, fail

__all__ = ["app", "fail"]

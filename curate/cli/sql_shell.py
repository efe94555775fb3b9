"""`curate sql RUN` with no query: an interactive SQL prompt over the run's views, read-only.

A statement runs when a line ends with `;` (lines before it are continued). Dot commands: `.views`, `.schema
<view>`, `.help`, `.quit`. History is kept in `$CURATE_CACHE_DIR/sql_history` through readline, where Python has
it. Every statement passes `check_read_only` first, and the connection's configuration is locked, as for one
query. DuckDB's own shell is not used: its safe mode, the only way to stop it writing files, also stops it reading
the Parquet shards the views are made of.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from curate.data.errors import CurateError
from curate.inspect.sql import HIDDEN, read_only_connection, read_only_sql

PROMPT, MORE = "curate> ", "   ...> "
HELP = """Statements end with ';' (SELECT, DESCRIBE, SUMMARIZE, EXPLAIN, PRAGMA; the run is read-only).
  .views            the views: one per step, <label>_all, final, rejected, target, heldout, steps, manifest
  .schema VIEW      the columns of a view and their types
  .help             this text
  .quit             leave (or Ctrl-D)"""


def _history_file() -> Path:
    from curate.models.embedding_cache import cache_root

    return cache_root() / "sql_history"


class SqlShell:
    """One prompt session over a run directory: `handle(line)` per line typed, `loop()` to read them."""

    def __init__(self, run_dir: str | Path, show: Callable[[Any], None], max_rows: int = 50):
        self.con = read_only_connection(run_dir)
        self.show = show  # prints a rich renderable or a string
        self.max_rows = max_rows
        self.buffer: list[str] = []

    @property
    def prompt(self) -> str:
        return MORE if self.buffer else PROMPT

    def views(self) -> list[str]:
        return [name for (name,) in self.con.sql("SELECT table_name FROM information_schema.tables "
                                                 "ORDER BY table_name").fetchall() if not name.startswith(HIDDEN)]

    def handle(self, line: str) -> bool:
        """Take one typed line; False when the session should end."""
        stripped = line.strip()
        if not self.buffer and stripped.startswith("."):
            return self._dot(stripped)
        if stripped:
            self.buffer.append(line)
        if self.buffer and stripped.endswith(";"):
            statement, self.buffer = "\n".join(self.buffer), []
            self._execute(statement)
        return True

    def _dot(self, command: str) -> bool:
        name, _, argument = command.partition(" ")
        if name in (".quit", ".exit", ".q"):
            return False
        if name == ".views":
            self.show("\n".join(self.views()))
        elif name == ".schema" and argument.strip():
            view = argument.strip().rstrip(";")
            if view not in self.views():
                self.show(f"[red]no view {view!r}[/]; .views lists them")
            else:
                self._execute(f'DESCRIBE "{view}"')
        elif name == ".help":
            self.show(HELP)
        else:
            self.show(f"[red]unknown command {command!r}[/]\n{HELP}")
        return True

    def _execute(self, statement: str) -> None:
        from curate.cli.console import arrow_table

        try:
            result = read_only_sql(self.con, statement)
            if result is not None:
                self.show(arrow_table(result.to_arrow_table(), max_rows=self.max_rows))
        except CurateError as error:
            self.show(f"[red]{error}[/]")
        except duckdb.Error as error:
            self.show(f"[red]SQL: {error}[/]")

    def loop(self, read: Callable[[str], str] = input) -> None:
        """Read lines until `.quit` or end of input; Ctrl-C drops the statement being typed."""
        history = _enable_history()
        self.show(f"curate sql: {len(self.views())} views; statements end with ';', .help for more")
        try:
            while True:
                try:
                    line = read(self.prompt)
                except KeyboardInterrupt:
                    self.buffer = []
                    self.show("")
                    continue
                except EOFError:
                    break
                if not self.handle(line):
                    break
        finally:
            if history is not None:
                history()
            self.con.close()


def _enable_history() -> Callable[[], None] | None:
    """Load the prompt's history through readline; returns the function that saves it (None without readline)."""
    try:
        import readline
    except ImportError:
        return None
    path = _history_file()
    with contextlib.suppress(OSError):  # no history yet
        readline.read_history_file(path)
    readline.set_history_length(1000)

    def save() -> None:
        with contextlib.suppress(OSError):  # a read-only home: the session still ends cleanly
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)

    return save

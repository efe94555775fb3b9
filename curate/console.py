"""Terminal output for the CLI: progress bars (rows/s, ETA) and tables."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from curate import progress as progress_api
from curate.summary import StageSummary

console = Console()


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="cyan")


class RichProgress(progress_api.Progress):
    """One bar per stage step; safe to call from worker threads."""

    def __init__(self) -> None:
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description:<24}"), BarColumn(),
                             MofNCompleteColumn(), RowsPerSecond(), TimeElapsedColumn(), TimeRemainingColumn(),
                             console=console, transient=False)
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self.bars.start()
        self.previous = progress_api.set_progress(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        progress_api.set_progress(self.previous)
        self.bars.stop()

    def start(self, key: str, description: str, total: int | None) -> None:
        with self.lock:
            self.tasks[key] = self.bars.add_task(description, total=total)

    def advance(self, key: str, rows: int) -> None:
        with self.lock:
            if key in self.tasks:
                self.bars.advance(self.tasks[key], rows)

    def finish(self, key: str) -> None:
        with self.lock:
            if key in self.tasks:
                task = self.bars.tasks[self.tasks[key]]
                self.bars.update(self.tasks[key], total=task.completed)
                self.bars.stop_task(self.tasks[key])


def stage_table(summaries: Sequence[StageSummary], title: str = "stages") -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in [("#", "right"), ("stage", "left"), ("rows in", "right"), ("kept", "right"),
                          ("rejected", "right"), ("seconds", "right"), ("status", "left"),
                          ("top drop reason", "left")]:
        table.add_column(name, justify=justify, no_wrap=True)
    for s in summaries:
        reasons = next((f"{r} ({n:,})" for r, n in s.reasons.items()), "")
        table.add_row("" if s.index < 0 else f"{s.index:02d}", s.label, f"{s.rows_in:,}", f"{s.rows_out:,}",
                      f"{s.rows_rejected:,}", f"{s.seconds:.1f}", s.status, reasons)
    return table


def reasons_table(summaries: Sequence[StageSummary]) -> Table:
    table = Table(title="drop reasons", title_justify="left")
    for name, justify in [("stage", "left"), ("reason", "left"), ("rows", "right"), ("share of stage input", "right")]:
        table.add_column(name, justify=justify)
    for s in summaries:
        for reason, count in s.reasons.items():
            table.add_row(s.label, reason, f"{count:,}", f"{count / max(s.rows_in, 1):.1%}")
    return table


def arrow_table(result: pa.Table, max_rows: int = 50, max_width: int = 80) -> Table:
    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(name, overflow="fold")
    for row in result.slice(0, max_rows).to_pylist():
        cells = []
        for value in row.values():
            text = "NULL" if value is None else str(value)
            cells.append(text if len(text) <= max_width else text[: max_width - 1] + "…")
        table.add_row(*cells)
    if result.num_rows > max_rows:
        table.caption = f"{max_rows} of {result.num_rows:,} rows shown (use --format csv or json for all)"
    return table

"""Terminal output for the CLI: progress bars (rows/s, ETA) and tables."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from rich.console import Console, Group
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

from curate.data import progress as progress_api
from curate.inspect.clusters import ClusterSummary
from curate.inspect.summary import StepSummary, leak_line

console = Console()


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "rows")
        return Text(f"{speed:,.{1 if speed and speed < 10 else 0}f} {unit}/s" if speed else "", style="cyan")


class RichProgress(progress_api.Progress):
    """One bar per stage step; safe to call from worker threads."""

    def __init__(self) -> None:
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description:<24}"), BarColumn(),
                             MofNCompleteColumn(), RowsPerSecond(), TimeElapsedColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[note]}"), console=console, transient=False)
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self.bars.start()
        self.previous = progress_api.set_progress(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        progress_api.set_progress(self.previous)
        self.bars.stop()

    def start(self, key: str, description: str, total: int | None, unit: str = "rows") -> None:
        with self.lock:
            self.tasks[key] = self.bars.add_task(description, total=total, unit=unit, note="")

    def advance(self, key: str, rows: int) -> None:
        with self.lock:
            if key in self.tasks:
                self.bars.advance(self.tasks[key], rows)

    def note(self, key: str, text: str) -> None:
        with self.lock:
            if key in self.tasks:
                self.bars.update(self.tasks[key], note=text)

    def finish(self, key: str) -> None:
        with self.lock:
            if key in self.tasks:
                task = self.bars.tasks[self.tasks[key]]
                self.bars.update(self.tasks[key], total=task.completed)
                self.bars.stop_task(self.tasks[key])


NOTE_METRICS = {"heldout_loss_initial": "held-out loss", "heldout_loss_final": "->", "steps": "steps"}


def _note(s: StepSummary) -> str:
    """The last column of the step table: the top drop reason, or what an artifact step measured."""
    if s.output == "artifacts":
        return " ".join(f"{name} {s.metrics[key]:.3f}" if isinstance(s.metrics[key], float) else
                        f"{name} {s.metrics[key]}" for key, name in NOTE_METRICS.items()
                        if s.metrics.get(key) is not None)
    return next((f"{r} ({n:,})" for r, n in s.reasons.items()), "")


def stage_table(summaries: Sequence[StepSummary], title: str = "stages") -> Table:
    """Rows per step; only the last column (drop reason, metrics) shrinks on a narrow terminal."""
    added = any(s.rows_added for s in summaries)
    names = ["step", "rows in", "kept", "rejected"] + (["added"] if added else []) + ["seconds", "status"]
    rows = []
    for s in summaries:
        kept = f"{s.rows_kept:,}" if s.output != "artifacts" else "-"
        row = [s.label, f"{s.rows_in:,}", kept, f"{s.rows_rejected:,}"]
        row += [f"{s.rows_added:,}"] if added else []
        rows.append([*row, f"{s.seconds:.1f}", s.status])
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(names):
        width = max([len(name)] + [len(r[i]) for r in rows])
        table.add_column(name, justify="left" if i in (0, len(names) - 1) else "right", no_wrap=True,
                         min_width=width)
    table.add_column("notes", overflow="ellipsis", no_wrap=True)  # top drop reason, or an artifact's metrics
    for row, s in zip(rows, summaries, strict=True):
        table.add_row(*row, _note(s))
    return table


def reasons_table(summaries: Sequence[StepSummary]) -> Table:
    table = Table(title="drop reasons", title_justify="left")
    for name, justify in [("stage", "left"), ("reason", "left"), ("rows", "right"), ("share of stage input", "right")]:
        table.add_column(name, justify=justify)
    for s in summaries:
        for reason, count in s.reasons.items():
            table.add_row(s.label, reason, f"{count:,}", f"{count / max(s.rows_in, 1):.1%}")
    return table


def cluster_table(summary: ClusterSummary) -> Group:
    lo, mid, hi = summary.sizes
    klo, kmid, khi = summary.kept
    table = Table(title=f"{summary.label}: {summary.clusters:,} clusters", title_justify="left")
    for name in ("largest clusters", "rows", "kept"):
        table.add_column(name, justify="right")
    for cluster, rows, kept in summary.largest:
        table.add_row(str(cluster), f"{rows:,}", f"{kept:,}")
    note = Text(f"rows per cluster {lo:,} / {mid:,.0f} / {hi:,}; kept per cluster {klo:,} / {kmid:,.0f} / {khi:,} "
                "(min / median / max)")
    return Group(table, note)


def arrow_table(result: pa.Table, max_rows: int = 50, max_width: int = 60) -> Table:
    """A query result, one line per row; long values are cut (csv/json output gives them whole)."""
    rows = []
    for row in result.slice(0, max_rows).to_pylist():
        cells = ["NULL" if v is None else str(v).replace("\n", "⏎") for v in row.values()]
        rows.append([c if len(c) <= max_width else c[: max_width - 1] + "…" for c in cells])
    table = Table(show_lines=False)
    for i, name in enumerate(result.column_names):
        natural = max([len(name)] + [len(r[i]) for r in rows])
        table.add_column(name, overflow="ellipsis", no_wrap=True, min_width=min(natural, 10), max_width=natural)
    for cells in rows:
        table.add_row(*cells)
    if result.num_rows > max_rows:
        table.caption = f"{max_rows} of {result.num_rows:,} rows shown (use --format csv or json for all)"
    return table


def _mean_std(entry: dict[str, Any] | None, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    std = f" ± {entry['std']:.{digits}f}" if entry.get("std") is not None else ""
    return f"{entry['mean']:.{digits}f}{std}"


def _interval(paired: dict[str, Any] | None) -> str:
    if not paired or paired.get("mean") is None:
        return ""
    ci = paired.get("ci95")
    span = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    return f"{paired['mean']:+.3f}{span}"


def evaluation_table(results: dict[str, Any], title: str = "closed-loop evaluation") -> Group:
    """Arms with rows, tokens, held-out loss and accuracy over seeds, each arm minus random with its paired 95%
    interval; then the data-efficiency line."""
    table = Table(title=title, title_justify="left")
    for name, justify in [("arm", "left"), ("rows", "right"), ("tokens", "right"), ("held-out loss", "right"),
                          ("accuracy", "right"), ("- random (95% CI)", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name, arm in results["arms"].items():
        rows = arm["rows"]
        tokens = arm["tokens"]
        rows_text = f"{round(sum(rows) / len(rows)):,}" if rows else "-"
        tokens_text = f"{round(sum(tokens) / len(tokens)):,}" if tokens else "-"
        table.add_row(name, rows_text, tokens_text, _mean_std(arm), _mean_std(arm.get("accuracy")),
                      _interval(arm.get("vs_random")))
    seeds = len(results["arms"]["selection"]["seeds"])
    efficiency = results.get("data_efficiency")
    if isinstance(efficiency, float):
        line = f"data efficiency: random data needs {efficiency:.2f}x the selection's tokens to match its loss"
    elif efficiency is None:
        line = "data efficiency: no random arm to compare with"
    else:
        line = f"data efficiency: {efficiency} (random arms' multiples of the selection's tokens)"
    paired = results["paired"]
    verdict = ("the selection beats random" if paired.get("excludes_zero") and paired["mean"] < 0 else
               "random beats the selection" if paired.get("excludes_zero") else
               "no difference from random at 95%")
    lines = [Text(f"{seeds} seeds; loss: mean NLL per supervised held-out token; {verdict}"), Text(line)]
    if (leak := leak_line(results.get("leak"))) is not None:
        lines.append(Text(leak, style="yellow"))
    return Group(table, *lines)

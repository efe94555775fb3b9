"""How a `Run` and a `StepData` show in a notebook (`_repr_html_`): a short table of steps and rows, the top drop
reasons, and a link to the run's report. Every value from the run is escaped: texts and labels are data."""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curate.inspect.run_data import Run, StepData
    from curate.inspect.summary import StepSummary

TOP_REASONS = 5


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _reasons(steps: list[StepSummary]) -> list[list[object]]:
    counts: Counter[tuple[str, str]] = Counter()
    for s in steps:
        counts.update({(s.label, reason): n for reason, n in s.reasons.items()})
    return [[label, reason, n] for (label, reason), n in counts.most_common(TOP_REASONS)]


def run_html(run: Run) -> str:
    rows = [[s.label, s.stage, s.rows_in, s.rows_kept, s.rows_rejected, s.rows_added, s.seconds]
            for s in run.steps]
    parts = [f"<p><b>curate run {escape(run.name)!s}</b> <code>{escape(str(run.path))}</code>: "
             f"{len(run.steps)} steps" + ("" if run.finished else
                                           f", <b>unfinished</b> (missing: {escape(', '.join(run.missing))})")
             + "</p>",
             _table(["step", "stage", "rows in", "kept", "rejected", "added", "seconds"], rows)]
    if reasons := _reasons(run.steps):
        parts += ["<p>top drop reasons</p>", _table(["step", "reason", "rows"], reasons)]
    if run.report is not None:
        parts.append(f'<p><a href="{escape(run.report.as_uri())}" target="_blank">report.html</a></p>')
    return "\n".join(parts)


def step_html(data: StepData) -> str:
    schema = data.schema
    parts = [f"<p><b>{escape(data.label)}</b> ({escape(data.what)}): {data.num_rows:,} rows in "
             f"{len(data.files)} shard(s)</p>",
             _table(["column", "type"], [[f.name, str(f.type)] for f in schema])]
    if data.step is not None and data.what == "rows" and (reasons := _reasons([data.step])):
        parts += ["<p>top drop reasons</p>", _table(["step", "reason", "rows"], reasons)]
    return "\n".join(parts)

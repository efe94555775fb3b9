"""What happened in a run: rows per stage, drop reasons, time (read from the manifests and run.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curate.dataset import Dataset
from curate.rundir import RunDir


@dataclass
class StageSummary:
    index: int
    label: str
    kind: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    seconds: float
    status: str  # "ran", "skipped" (in the last run) or "" (unknown)
    reasons: dict[str, int] = field(default_factory=dict)


def summarize_run(run_dir: str | Path) -> list[StageSummary]:
    """One summary per finished stage (and the target, if any), in pipeline order."""
    run = RunDir.open(run_dir)
    status = {s["label"]: s["status"] for s in run.read_run_json().get("steps", [])}
    folders = [(-1, "target", run.target)] if Dataset.exists(run.target) else []
    folders += [(o.index, o.label, o.kept) for o in run.outputs()]
    summaries = []
    for index, label, path in folders:
        manifest = Dataset.open(path).manifest
        stats = manifest.get("stats", {})
        summaries.append(StageSummary(
            index=index, label=label, kind=manifest.get("config", {}).get("stage", label),
            rows_in=stats.get("rows_in", 0), rows_out=manifest["rows"], rows_rejected=stats.get("rows_rejected", 0),
            seconds=stats.get("seconds", 0.0), status=status.get(label, ""), reasons=stats.get("reasons", {}),
        ))
    return summaries

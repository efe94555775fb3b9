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


@dataclass
class ClusterSummary:
    """Cluster sizes and rows kept per cluster, for a stage that adds a `cluster` column."""

    label: str
    clusters: int
    sizes: tuple[int, float, int]  # min, median, max rows per cluster
    kept: tuple[int, float, int]  # min, median, max rows kept per cluster
    largest: list[tuple[int, int, int]]  # (cluster, rows, kept) of the largest clusters


def cluster_summaries(run_dir: str | Path, largest: int = 5) -> list[ClusterSummary]:
    """One summary per stage whose output has a `cluster` column."""
    from curate.sql import connect

    run = RunDir.open(run_dir)
    labels = [o.label for o in run.outputs() if "cluster" in Dataset.open(o.kept).schema.names]
    if not labels:
        return []
    con = connect(run_dir)
    found = []
    for label in labels:
        per_cluster = (f'SELECT cluster, count(*) AS n, count(*) FILTER (WHERE kept) AS k FROM "{label}_all" '
                       "WHERE cluster IS NOT NULL GROUP BY cluster")
        stats = con.sql(f"SELECT count(*), min(n), median(n), max(n), min(k), median(k), max(k) "
                        f"FROM ({per_cluster})").fetchall()[0]
        top = con.sql(f"{per_cluster} ORDER BY n DESC, cluster LIMIT {largest}").fetchall()
        found.append(ClusterSummary(label, stats[0], tuple(stats[1:4]), tuple(stats[4:7]),
                                    [tuple(row) for row in top]))
    con.close()
    return found

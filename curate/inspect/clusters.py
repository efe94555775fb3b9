"""Cluster sizes and rows kept per cluster, for the steps whose output has a `cluster` column (kMQ, semantic
dedup): what `curate inspect` prints under a clustering step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curate.data.dataset import Dataset
from curate.inspect.sql import connect
from curate.inspect.summary import run_steps


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
    labels = [s.label for s in run_steps(run_dir) if s.rows is not None and s.artifacts is None and not s.sample
              and "cluster" in Dataset.open(s.rows).schema.names]
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

"""A run's outputs reduced to what must not change when the runner changes: per step folder, the row count, the
column names, and a hash of the sorted (id, drop reason) pairs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from curate.data.dataset import Dataset


def digest(run: Path, ignore: frozenset[str] = frozenset()) -> dict[str, dict]:
    """`ignore`: ids left out (rows added to a recipe's data after the digests were recorded)."""
    out = {}
    for kind in ("stages", "rejected"):
        for folder in sorted((run / kind).iterdir()):
            if not Dataset.exists(folder):  # a step folder (its `.meta` folder is not a dataset)
                continue
            tables = [pq.read_table(f) for f in sorted(folder.glob("part-*.parquet"))]
            # an empty step's one shard holds only its schema (curate.data.dataset.write_manifest): no columns of data
            names = sorted({n for t in tables if t.num_rows for n in t.column_names})
            rows = []
            for t in tables:
                ids = t.column("id").to_pylist() if "id" in t.column_names else [None] * t.num_rows
                reasons = t.column("reason").to_pylist() if kind == "rejected" else [None] * t.num_rows
                rows += [f"{i}\t{r}" for i, r in zip(ids, reasons, strict=True) if i not in ignore]
            rows.sort()
            out[f"{kind}/{folder.name}"] = {"rows": len(rows), "columns": names,
                                            "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()}
    return out

"""The run-level sample steps: `heldout` split from the ingested target (`split_from_target`), and `target/`
without the rows that repeat a held-out row. Each writes its sample whole, with a step's counts."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.data.dataset import Dataset, atomic_write_text, remove_dataset
from curate.data.rundir import RunDir
from curate.engine.plan import Step
from curate.methods.eval_sets import heldout_keys, repeats_heldout

log = logging.getLogger("curate")


def split_heldout(run_dir: RunDir, step: Step, start: float) -> None:
    """Hold out a seeded share of the ingested target: `heldout/` gets it, `target/` the rest."""
    source = Dataset.open(run_dir.target_all)
    table = source.to_table()
    n = table.num_rows
    k = int(np.floor(step.params["split_from_target"] * n))
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(step.params["seed"]).permutation(n)[:k]] = True
    common = {"fingerprint": step.fingerprint, "parents": [source.fingerprint], "config": dict(step.params)}
    parts = {}
    for name, mask, folder in (("target", ~held, run_dir.target), ("heldout", held, step.out_dir)):
        part = table.filter(pa.array(mask))
        parts[name] = part.column("id").to_pylist()
        _write_sample(folder, part, name, n, start, **common)
    split = {"split_from_target": step.params["split_from_target"], "seed": step.params["seed"],
             "target_ids": parts["target"], "heldout_ids": parts["heldout"]}
    atomic_write_text(run_dir.heldout_split, json.dumps(split, indent=1))
    log.info("heldout: %d of %d target rows held out (seed %d)", k, n, step.params["seed"])

def exclude_heldout(run_dir: RunDir, step: Step, start: float) -> None:
    """`target/` = the ingested target without the rows that repeat a held-out row (the same `text`, or the
    same `prompt`): a selection must never have seen what the evaluation measures on."""
    source, held = Dataset.open(run_dir.target_all), Dataset.open(run_dir.heldout)
    table = source.to_table()
    overlap = repeats_heldout(table, heldout_keys(held))
    kept = table.filter(pa.array(~overlap))
    dropped = table.filter(pa.array(overlap)).column("id").to_pylist()
    _write_sample(step.out_dir, kept, "target", table.num_rows, start,
                  {"in_heldout": len(dropped)} if dropped else {}, fingerprint=step.fingerprint,
                  parents=[source.fingerprint, held.fingerprint], config={})
    atomic_write_text(run_dir.heldout_overlap, json.dumps({"target_ids_in_heldout": dropped}, indent=1))
    if dropped:
        log.warning("target: %d of %d rows repeat a held-out row; they are left out of the target (ids in %s)",
                    len(dropped), table.num_rows, run_dir.heldout_overlap.name)


def _write_sample(folder: Path, rows: pa.Table, name: str, rows_in: int, start: float,
                  reasons: dict[str, int] | None = None, **manifest: Any) -> None:
    """A run-level sample (target or heldout) written whole, with the counts of a step that kept `rows` of
    `rows_in` (the rows it left out counted by reason)."""
    reasons = reasons or {}
    stats = {"rows_in": rows_in, "rows_out": rows.num_rows, "rows_kept": rows.num_rows,
             "rows_rejected": sum(reasons.values()), "rows_added": 0,
             "seconds": round(time.perf_counter() - start, 3), "reasons": reasons}
    remove_dataset(folder)
    Dataset.write(folder, rows, stage=name, stats=stats, **manifest)

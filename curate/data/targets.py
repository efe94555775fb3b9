"""The run's `target:` sample as one or several weighted targets.

`target:` may be one dataset or a list of them, each with a `name` and a `weight` (default 1). Ingest tags every
target row with its target's `target_name` and `target_weight`, so any stage that reads the target sees both:
- `target_row_weights(table)`: a probability per row such that each target's rows together carry a share of the
  mass proportional to its weight (uniform within a target); GOT-D's target marginal, DSIR's mixture;
- `target_groups(table)`: (name, weight, row positions) per target, in order of first appearance;
- `weighted_union(table, seed)`: row positions, repeated or sampled so that each target's share of the rows is
  proportional to its weight (CoLoR-Filter fine-tunes its conditional model on these).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

TARGET_NAME, TARGET_WEIGHT = "target_name", "target_weight"
DEFAULT_TARGET = "target"


class TargetGroup(NamedTuple):
    name: str
    weight: float
    positions: np.ndarray


def target_groups(table: pa.Table) -> list[TargetGroup]:
    """Each target's name, weight and row positions; one group of weight 1 for rows without the tags."""
    n = table.num_rows
    if TARGET_NAME not in table.column_names:
        return [TargetGroup(DEFAULT_TARGET, 1.0, np.arange(n))]
    names = np.array(table.column(TARGET_NAME).to_pylist(), dtype=object)
    weights = (np.asarray(table.column(TARGET_WEIGHT).to_numpy(zero_copy_only=False), np.float64)
               if TARGET_WEIGHT in table.column_names else np.ones(n))
    groups = []
    for name in dict.fromkeys(names.tolist()):
        rows = np.flatnonzero(names == name)
        groups.append(TargetGroup(str(name), float(weights[rows[0]]), rows))
    return groups


def target_row_weights(table: pa.Table) -> np.ndarray:
    """Per-row probabilities: target t's rows share w_t / Σw equally."""
    out = np.zeros(table.num_rows)
    groups = target_groups(table)
    total = sum(g.weight for g in groups)
    for group in groups:
        if len(group.positions):
            out[group.positions] = group.weight / total / len(group.positions)
    return out


def weighted_union(table: pa.Table, seed: int = 0) -> np.ndarray:
    """Row positions (as many as the target has rows) in which target t holds a share w_t / Σw: its rows in
    whole passes, then a seeded sample for the rest. One target: every row once, in order."""
    groups = target_groups(table)
    if len(groups) == 1:
        return groups[0].positions
    rng = np.random.default_rng(seed)
    total, n = sum(g.weight for g in groups), table.num_rows
    picked = []
    for group in groups:
        want = round(n * group.weight / total)
        passes, rest = divmod(want, len(group.positions))
        picked += [np.tile(group.positions, passes), np.sort(rng.choice(group.positions, rest, replace=False))]
    return np.concatenate(picked).astype(np.int64)

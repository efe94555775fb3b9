"""Placed decisions: a global stage that orders or repeats rows (a mixture, a curriculum) gives each kept row its
output positions; the apply tasks scatter rows into per-output-shard bucket files and `gather_task` writes each
output shard from its buckets, in position order. Output shards hold a fixed number of rows, so their bytes do not
depend on how the input was sharded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.errors import CurateError
from curate.data.progress import progress
from curate.data.schemas import conform
from curate.data.shards import ShardWriter
from curate.engine.step_task import StepTask, read_receipt, write_receipt
from curate.stages.base import Stage
from curate.stages.decision import PARENT_ID, POSITION, REPEAT, Decision, apply_decision


def check_positions(stage: Stage, decision: Decision) -> dict[str, Any]:
    """Placed copies must fill output positions 0..n-1 exactly once, and dropped rows have none."""
    flat = pc.list_flatten(decision.positions).to_numpy(zero_copy_only=False).astype(np.int64)
    if not np.array_equal(np.sort(flat), np.arange(len(flat))):
        raise CurateError(f"stage '{stage.name}': its output positions are not 0..{len(flat) - 1}, each once (a bug)")
    counts = pc.list_value_length(decision.positions).to_numpy(zero_copy_only=False)
    if decision.reason is not None:
        dropped = pc.is_valid(decision.reason).to_numpy(zero_copy_only=False)
        if (counts[dropped] > 0).any() or (counts[~dropped] == 0).any():
            raise CurateError(f"stage '{stage.name}': a dropped row has output positions, or a kept row none (a bug)")
    return {"output_rows": len(flat), "shard_rows": stage.ordered_shard_rows()}


def placed_schema(stage: Stage, schema: pa.Schema, decision: Decision) -> pa.Schema:
    """The schema of every output shard of a placed decision: fixed at decide time, so that output bytes do not
    depend on which rows a shard happens to hold."""
    fields = {f.name: f for f in schema}
    fields.update({name: pa.field(name, values.type) for name, values in decision.adds.items()})
    fields[REPEAT] = pa.field(REPEAT, pa.int64())
    fields.setdefault(PARENT_ID, pa.field(PARENT_ID, pa.string()))
    keep = stage.output_columns(list(fields))
    return pa.schema([fields[c] for c in (keep if keep is not None else fields)])


def _placed_output_schema(task: StepTask) -> pa.Schema:
    data = json.loads((Path(task.work_dir) / "output_schema.json").read_text())
    return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(data["arrow"])))


def scatter_shard(task: StepTask, stage: Stage, decided: Iterator[tuple[pa.Table, Decision]], ref: str,
                   out_name: str) -> dict[str, Any]:
    """Placed rows go to the bucket files of the output shards they belong in; dropped rows to rejected."""
    info = json.loads((Path(task.work_dir) / "_decided.json").read_text())
    per_shard = info["shard_rows"]
    schema = _placed_output_schema(task).append(pa.field(POSITION, pa.int64()))
    start, rows_in, rows_kept, rows_added = time.perf_counter(), 0, 0, 0
    pieces: list[pa.Table] = []
    with ShardWriter(task.rejected_dir, out_name) as rejected:
        for table, decision in decided:
            applied = apply_decision(table, decision, task.label, stage.rejected_reference)
            placed = [t for t in (applied.kept, applied.added) if t.num_rows]
            pieces += [conform(t.select([c for c in schema.names if c in t.column_names]), schema) for t in placed]
            rejected.write(applied.rejected)
            rows_in += table.num_rows
            rows_kept += applied.kept_rows
            rows_added += applied.added.num_rows
            progress().advance(task.key, table.num_rows)
        buckets = []
        if pieces:
            rows = pa.concat_tables(pieces)
            bucket = rows.column(POSITION).to_numpy() // per_shard
            order = np.argsort(bucket, kind="stable")  # one take, then a zero-copy slice per bucket
            rows, bucket = rows.take(pa.array(order)), bucket[order]
            for b, first, count in zip(*np.unique(bucket, return_index=True, return_counts=True), strict=True):
                _write_ipc(Path(task.work_dir) / f"bucket-{b:05d}-{out_name.removesuffix('.parquet')}.arrow",
                           rows.slice(int(first), int(count)))
                buckets.append(int(b))
        done = rejected.close()
    return write_receipt(task.out_dir, ref, [], [done], rows_in, time.perf_counter() - start, rows_kept,
                          rows_added, buckets=buckets)


def _write_ipc(path: Path, table: pa.Table) -> None:
    """A work file in Arrow's IPC format (uncompressed, memory-mapped when read): written under a temporary name."""
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    tmp.replace(path)


def gather_task(task: StepTask, bucket: int) -> dict[str, Any]:
    """Write output shard `bucket` of a placed decision: its rows from every bucket file, in position order."""
    name = f"gather-{bucket:05d}"
    if (done := read_receipt(task.out_dir, name)) is not None:
        return done
    start = time.perf_counter()
    schema = _placed_output_schema(task)
    files = sorted(Path(task.work_dir).glob(f"bucket-{bucket:05d}-*.arrow"))
    rows = pa.concat_tables([pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files])
    rows = rows.take(pc.sort_indices(rows.column(POSITION))).drop_columns([POSITION])
    with ShardWriter(task.out_dir, f"part-{bucket:05d}.parquet", schema) as writer:
        writer.write(conform(rows, schema))
        info = writer.close()
    return write_receipt(task.out_dir, name, [info], [], 0, time.perf_counter() - start, 0, 0)

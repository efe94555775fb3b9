"""Ingest: input files -> rows of the data contract. Always the first step of a run.

Each input file is one task. Bad records never stop a run: they become rejected rows with a reason
and their file, record index and line. Rows read = rows kept + rows rejected, per file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.data.dataset import rejected_rows
from curate.data.errors import CurateError
from curate.data.progress import progress
from curate.data.shards import RollingWriter, ShardInfo, write_shard
from curate.io.formats import read_unit
from curate.io.mapping import map_chunk, typed_sources
from curate.io.readers import BadRecord
from curate.io.sources import InputUnit


def _location(path: str, rows: list | np.ndarray, lines: list | np.ndarray | None) -> dict[str, pa.Array]:
    n = len(rows)
    return {
        "input_file": pa.array([path] * n, pa.string()),
        "input_row": pa.array(rows, pa.int64()),
        "input_line": pa.array(lines if lines is not None else [None] * n, pa.int64()),
    }


def _bad_records(unit: InputUnit, bad: list[BadRecord], stage: str) -> pa.Table:
    return rejected_rows(
        pa.table({"raw": pa.array([b.raw for b in bad], pa.string())}), stage,
        pa.array([b.reason for b in bad], pa.string()),
        details=_location(unit.path, [b.row for b in bad], [b.line for b in bad]))


def ingest_unit(unit: InputUnit, out_dir: str, rejected_dir: str, shard_rows: int, stage: str,
                key: str) -> tuple[list[ShardInfo], list[ShardInfo], int]:
    """Read, map and write one input file. Returns (kept shards, rejected shards, rows read)."""
    kept = RollingWriter(out_dir, f"part-{unit.index:05d}", shard_rows)
    rejected = RollingWriter(rejected_dir, f"part-{unit.index:05d}", shard_rows)
    rows_read = 0
    for chunk in read_unit(unit, typed_sources(dict(unit.fields))):
        rows_read += chunk.table.num_rows + len(chunk.bad)
        if chunk.table.num_rows:
            mapped, reason = map_chunk(chunk.table, unit)
            ok = pc.is_null(reason)
            kept.write(mapped.filter(ok))
            if reason.null_count < len(reason):
                drop = pc.invert(ok)
                mask = drop.to_numpy(zero_copy_only=False)
                lines = chunk.line[mask] if chunk.line is not None else None
                rejected.write(rejected_rows(chunk.table.filter(drop), stage, reason.filter(drop),
                                             details=_location(unit.path, chunk.row[mask], lines)))
        if chunk.bad:
            rejected.write(_bad_records(unit, chunk.bad, stage))
        progress().advance(key, chunk.table.num_rows + len(chunk.bad))
    return kept.close(), rejected.close(), rows_read


def make_ids_unique(dataset_dir: str, shards: list[ShardInfo]) -> tuple[list[ShardInfo], int]:
    """Rename repeated ids (the same content twice, or repeated source ids) to `<id>#<k>`.

    The first occurrence in dataset order keeps its id, so the result does not depend on how the work
    was split. Only shards that hold a renamed row are rewritten. Returns (shards, rows renamed).
    """
    shards = sorted(shards, key=lambda s: s.file)
    if not shards:
        return shards, 0
    directory = Path(dataset_dir)
    ids = pa.concat_arrays([pq.read_table(directory / s.file, columns=["id"]).column("id").combine_chunks()
                            for s in shards])
    codes = pc.dictionary_encode(ids).indices.to_numpy()
    repeated = np.flatnonzero(np.bincount(codes)[codes] > 1)
    if not len(repeated):
        return shards, 0
    order = repeated[np.argsort(codes[repeated], kind="stable")]  # groups of equal ids, in row order
    group_starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    rank = np.arange(len(order)) - np.repeat(group_starts, np.diff(np.r_[group_starts, len(order)]))
    rows, rank = order[rank > 0], rank[rank > 0]
    new_ids = {int(r): f"{ids[int(r)].as_py()}#{k}" for r, k in zip(rows, rank, strict=True)}
    if pc.any(pc.is_in(ids, value_set=pa.array(list(new_ids.values())))).as_py():
        raise CurateError(f"renaming repeated ids in {dataset_dir} collides with existing ids")
    offsets = np.cumsum([0] + [s.rows for s in shards])
    result = []
    for shard, begin, end in zip(shards, offsets[:-1], offsets[1:], strict=True):
        inside = rows[(rows >= begin) & (rows < end)]
        if not len(inside):
            result.append(shard)
            continue
        table = pq.read_table(directory / shard.file)
        values = table.column("id").to_pylist()
        for r in inside.tolist():
            values[r - begin] = new_ids[r]
        table = table.set_column(table.column_names.index("id"), "id", pa.array(values, pa.string()))
        result.append(write_shard(directory, shard.file, table))
    return result, len(rows)

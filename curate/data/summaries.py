"""A global step's per-shard summaries, read by column and by row on demand, so that a decision need not hold
every summary column of every row (dedup holds band keys, and reads signatures only for candidate rows)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.data.arrays import column_to_matrix
from curate.data.dataset import positions_by_shard, take_positions


class SummaryShards:
    """The summaries of a step's input shards, in input order: global row i is row i of their concatenation."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(p) for p in paths]
        rows = [pq.ParquetFile(p).metadata.num_rows for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        self.schema = pq.read_schema(self.paths[0]) if self.paths else pa.schema([])

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows, only `columns` (all when None)."""
        cols = list(columns) if columns is not None else None
        return pa.concat_tables([pq.read_table(p, columns=cols) for p in self.paths])

    def _read_shard(self, s: int, columns: Sequence[str]) -> pa.Table:
        return pq.read_table(self.paths[s], columns=list(columns))

    def take(self, indices: Sequence[int] | np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows at global positions `indices`, in that order, reading one shard at a time."""
        def read(s: int) -> pa.Table:
            return self._read_shard(s, columns)

        return take_positions(self.starts, read, indices, lambda: read(0).slice(0, 0) if self.paths else pa.table({}))

    def take_matrix(self, indices: Sequence[int] | np.ndarray, column: str, width: int, dtype: np.dtype,
                    fill: float | int = 0) -> np.ndarray:
        """The list column `column` of rows at `indices` as an (n, width) array of `dtype` (null rows `fill`), filled
        one shard at a time: never an Arrow copy of every taken row beside the result (dedup's verification reads
        the signatures of every candidate row, 0.9 KB each)."""
        out = np.empty((len(indices), width), dtype)
        for s, picked, local in positions_by_shard(self.starts, indices):
            part = self._read_shard(s, [column]).column(column).take(pa.array(local))
            out[picked] = column_to_matrix(part, width, dtype, fill)
        return out

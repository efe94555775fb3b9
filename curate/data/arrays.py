"""Conversions between fixed-size-list Arrow columns (embeddings, signatures) and 2-D numpy arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def matrix_to_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """An (n, d) array as a fixed_size_list<d> column of its dtype (float32, float16, uint64, ...)."""
    matrix = np.ascontiguousarray(matrix)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def column_to_matrix(column: pa.Array | pa.ChunkedArray, width: int, dtype: np.dtype | type,
                     fill: float | int = 0) -> np.ndarray:
    """A (fixed-size) list column as an (n, width) array of `dtype`; null rows are filled with `fill`."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.list_(pa.float32()))
    if column.null_count == 0:  # the common case: one flatten, no per-row work
        values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        return values.astype(dtype, copy=False).reshape(len(column), width)
    out = np.full((len(column), width), fill, dtype)
    valid = np.flatnonzero(pc.is_valid(column).to_numpy(zero_copy_only=False))
    if len(valid):
        values = pc.list_flatten(column.take(pa.array(valid))).to_numpy(zero_copy_only=False)
        out[valid] = values.astype(dtype).reshape(len(valid), width)
    return out

"""The `embedding` column that `embed` writes and clustering stages read: its name, type check and
a float32 numpy view."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.data.arrays import column_to_matrix
from curate.data.errors import CurateError

EMBEDDING = "embedding"


def embedding_matrix(column: pa.Array | pa.ChunkedArray,
                     ids: pa.Array | pa.ChunkedArray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An embedding column (fixed_size_list or equal-length list of float16/float32) as float32 (n, d),
    plus a mask of the rows that have one (null rows are zeros).

    Chunks are converted one by one into a single float32 array: combining them first would hold a
    second copy of every embedding (1.5 GB at 1M x 384 float32). One float32 chunk without nulls is
    used without any copy (read-only). Rows of another length than most are an error that names them (`ids`).
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    kind = column.type
    valid = np.concatenate([pc.is_valid(c).to_numpy(zero_copy_only=False) for c in chunks] or [np.zeros(0)])
    valid = valid.astype(bool)
    if pa.types.is_fixed_size_list(kind):
        width = kind.list_size
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = np.concatenate([pc.list_value_length(c).to_numpy(zero_copy_only=False) for c in chunks]
                                 or [np.zeros(0)])[valid]
        values, counts = np.unique(lengths, return_counts=True)
        width = int(values[counts.argmax()]) if len(values) else 0
        if len(values) > 1:
            odd = np.flatnonzero(valid)[lengths != width]
            first = f"id {ids[int(odd[0])]}" if ids is not None else f"row {int(odd[0])}"
            other = int(lengths[lengths != width][0])
            raise CurateError(
                f"column 'embedding': {len(odd)} row(s) have {other} values where {int(counts.max())} rows have "
                f"{width} (first: {first}); embed all rows with one model, or drop the column and add an `embed` "
                "step")
    else:
        raise CurateError(f"the embedding column must be a list of floats, got {kind}")
    if len(chunks) == 1:
        return column_to_matrix(chunks[0], width, np.float32), valid
    x = np.empty((len(valid), width), np.float32)
    offset = 0
    for chunk in chunks:
        x[offset:offset + len(chunk)] = column_to_matrix(chunk, width, np.float32)
        offset += len(chunk)
    return x, valid


class HoldsEmbeddings:
    """For global stages whose decision holds every row's embedding: what that costs per row (float32, the
    packaged 384-d embedder's width, twice for the working copies of clustering or transport, plus the id)."""

    def decision_bytes_per_row(self) -> int:
        return 2 * 4 * 384 + 64


def check_embedding_type(stage: str, schema: pa.Schema) -> None:
    """Fail at once when the `embedding` column is not a list of floats."""
    kind = schema.field(EMBEDDING).type
    ok = (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind)) and pa.types.is_floating(kind.value_type)
    if not ok:
        raise CurateError(f"stage '{stage}': column 'embedding' must be a list of float16/float32, got {kind}")
